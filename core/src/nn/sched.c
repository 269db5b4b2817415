/* sched.c - learning-rate schedulers (torch.optim.lr_scheduler, 1.13). */
#include "dgrad/sched.h"
#include "impl.h"

#include <math.h>

#define DG_PI 3.14159265358979323846

dg_ctx *dg__optim_ctx(const dg_optim *o);   /* optim.c */

enum { SCHED_STEP, SCHED_COSINE, SCHED_ONECYCLE };

struct dg_sched {
    int kind;
    dg_optim *opt;
    int64_t last;              /* last_epoch */
    double base_lr, lr, momentum;
    int64_t step_size, t_max;
    double gamma, eta_min;
    dg_onecycle_opts oc;
    double oc_end[3], oc_lr[4], oc_mom[4];   /* phase ends; lr/momentum at phase edges */
    int oc_phases;
};

static dg_sched *sched_new(dg_optim *opt, int kind) {
    dg_sched *s = dg__ctx_calloc(dg__optim_ctx(opt), sizeof *s);
    s->kind = kind;
    s->opt = opt;
    s->base_lr = s->lr = dg_optim_get_lr(opt);
    return s;
}

static double cos_anneal(double start, double end, double pct) {
    return end + (start - end) / 2.0 * (cos(DG_PI * pct) + 1.0);
}

/* The lr (and momentum) at step s->last; false past a OneCycle's end. */
static bool compute(dg_sched *s) {
    int64_t e = s->last;
    switch (s->kind) {
    case SCHED_STEP:
        if (e != 0 && e % s->step_size == 0) s->lr *= s->gamma;
        return true;
    case SCHED_COSINE: {
        double T = (double)s->t_max;
        if (e == 0) {
            s->lr = s->base_lr;
        } else {
            int64_t k = (e - 1 - s->t_max) % (2 * s->t_max);
            if (k < 0) k += 2 * s->t_max;   /* Python's modulo */
            if (k == 0)
                s->lr = s->lr + (s->base_lr - s->eta_min) * (1.0 - cos(DG_PI / T)) / 2.0;
            else
                s->lr = (1.0 + cos(DG_PI * (double)e / T)) / (1.0 + cos(DG_PI * (double)(e - 1) / T)) *
                            (s->lr - s->eta_min) + s->eta_min;
        }
        return true;
    }
    case SCHED_ONECYCLE: {
        if (e > s->oc.total_steps) {
            dg_set_error("dg_sched_step: tried to step %lld times, the OneCycle schedule has %lld "
                         "total steps", (long long)e, (long long)s->oc.total_steps);
            return false;
        }
        double start = 0.0;
        for (int i = 0; i < s->oc_phases; i++) {
            double end = s->oc_end[i];
            if ((double)e <= end || i == s->oc_phases - 1) {
                double pct = ((double)e - start) / (end - start);
                if (s->oc.anneal_cos) {
                    s->lr = cos_anneal(s->oc_lr[i], s->oc_lr[i + 1], pct);
                    s->momentum = cos_anneal(s->oc_mom[i], s->oc_mom[i + 1], pct);
                } else {
                    s->lr = (s->oc_lr[i + 1] - s->oc_lr[i]) * pct + s->oc_lr[i];
                    s->momentum = (s->oc_mom[i + 1] - s->oc_mom[i]) * pct + s->oc_mom[i];
                }
                break;
            }
            start = end;
        }
        return true;
    }
    }
    return false;
}

static void apply(dg_sched *s) {
    dg_optim_set_lr(s->opt, (float)s->lr);
    if (s->kind == SCHED_ONECYCLE && s->oc.cycle_momentum)
        dg_optim_set_momentum(s->opt, (float)s->momentum);
}

dg_status dg_sched_step(dg_sched *s) {
    s->last++;
    double lr = s->lr, mom = s->momentum;
    if (!compute(s)) {
        s->last--;
        s->lr = lr;
        s->momentum = mom;
        return DG_ERR;
    }
    apply(s);
    return DG_OK;
}

double dg_sched_get_lr(const dg_sched *s) { return s->lr; }
int64_t dg_sched_last_step(const dg_sched *s) { return s->last; }

dg_sched *dg_sched_step_lr(dg_optim *opt, int64_t step_size, double gamma) {
    if (!opt) return NULL;
    if (step_size <= 0) {
        dg_set_error("dg_sched_step_lr: step_size must be positive, got %lld", (long long)step_size);
        return NULL;
    }
    dg_sched *s = sched_new(opt, SCHED_STEP);
    s->step_size = step_size;
    s->gamma = gamma;
    compute(s);
    apply(s);
    return s;
}

dg_sched *dg_sched_cosine(dg_optim *opt, int64_t t_max, double eta_min) {
    if (!opt) return NULL;
    if (t_max <= 0) {
        dg_set_error("dg_sched_cosine: T_max must be positive, got %lld", (long long)t_max);
        return NULL;
    }
    dg_sched *s = sched_new(opt, SCHED_COSINE);
    s->t_max = t_max;
    s->eta_min = eta_min;
    compute(s);
    apply(s);
    return s;
}

dg_onecycle_opts dg_onecycle_defaults(double max_lr, int64_t total_steps) {
    return (dg_onecycle_opts){ .max_lr = max_lr, .total_steps = total_steps, .pct_start = 0.3,
                               .anneal_cos = true, .div_factor = 25.0, .final_div_factor = 1e4,
                               .cycle_momentum = true, .base_momentum = 0.85,
                               .max_momentum = 0.95 };
}

dg_sched *dg_sched_onecycle(dg_optim *opt, dg_onecycle_opts o) {
    if (!opt) return NULL;
    if (o.total_steps <= 0 || !(o.max_lr > 0.0) || !(o.pct_start >= 0.0 && o.pct_start <= 1.0) ||
        !(o.div_factor > 0.0) || !(o.final_div_factor > 0.0)) {
        dg_set_error("dg_sched_onecycle: bad options: total_steps %lld, max_lr %g, pct_start %g "
                     "(in [0, 1]), div_factor %g, final_div_factor %g",
                     (long long)o.total_steps, o.max_lr, o.pct_start, o.div_factor,
                     o.final_div_factor);
        return NULL;
    }
    if (o.cycle_momentum && dg_optim_set_momentum(opt, (float)o.max_momentum) != DG_OK) {
        dg_set_error("dg_sched_onecycle: cycle_momentum needs an optimizer with momentum "
                     "(SGD with momentum, or Adam)");
        return NULL;
    }
    dg_sched *s = sched_new(opt, SCHED_ONECYCLE);
    s->oc = o;
    double init = o.max_lr / o.div_factor, min_lr = init / o.final_div_factor;
    double T = (double)o.total_steps;
    if (o.three_phase) {
        s->oc_phases = 3;
        s->oc_end[0] = o.pct_start * T - 1.0;
        s->oc_end[1] = 2.0 * o.pct_start * T - 2.0;
        s->oc_end[2] = T - 1.0;
        double lr[4] = { init, o.max_lr, init, min_lr };
        double mo[4] = { o.max_momentum, o.base_momentum, o.max_momentum, o.max_momentum };
        for (int i = 0; i < 4; i++) { s->oc_lr[i] = lr[i]; s->oc_mom[i] = mo[i]; }
    } else {
        s->oc_phases = 2;
        s->oc_end[0] = o.pct_start * T - 1.0;
        s->oc_end[1] = T - 1.0;
        double lr[3] = { init, o.max_lr, min_lr };
        double mo[3] = { o.max_momentum, o.base_momentum, o.max_momentum };
        for (int i = 0; i < 3; i++) { s->oc_lr[i] = lr[i]; s->oc_mom[i] = mo[i]; }
    }
    s->base_lr = init;
    compute(s);
    apply(s);
    return s;
}
