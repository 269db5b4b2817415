/* dgrad/sched.h - learning-rate schedulers with torch.optim.lr_scheduler's
 * semantics (PyTorch 1.13): StepLR, CosineAnnealingLR, OneCycleLR.
 *
 * A scheduler drives one optimizer. Creating it sets the optimizer's lr to
 * the schedule's value at step 0 (as PyTorch's constructor does); each
 * dg_sched_step() advances one step (call it after dg_optim_step) and sets
 * the next lr. Learning rates are computed in double, as PyTorch's Python
 * floats, and handed to the optimizer as float. Schedulers belong to the
 * optimizer's context and are freed with it.
 */
#ifndef DGRAD_SCHED_H
#define DGRAD_SCHED_H

#include "dgrad/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dg_sched dg_sched;   /* opaque */

/* StepLR: lr = base_lr * gamma^floor(step / step_size). */
dg_sched *dg_sched_step_lr(dg_optim *opt, int64_t step_size, double gamma);
/* CosineAnnealingLR(T_max, eta_min), PyTorch's recursive form. */
dg_sched *dg_sched_cosine(dg_optim *opt, int64_t t_max, double eta_min);

typedef struct {
    double max_lr;           /* required */
    int64_t total_steps;     /* required */
    double pct_start;        /* 0.3 */
    bool anneal_cos;         /* true (false: linear) */
    double div_factor;       /* 25: initial lr = max_lr / div_factor */
    double final_div_factor; /* 1e4: min lr = initial lr / final_div_factor */
    bool three_phase;        /* false */
    bool cycle_momentum;     /* true: SGD momentum / Adam beta1 cycles */
    double base_momentum;    /* 0.85 */
    double max_momentum;     /* 0.95 */
} dg_onecycle_opts;

dg_onecycle_opts dg_onecycle_defaults(double max_lr, int64_t total_steps);
/* OneCycleLR. NULL and an error on bad options. */
dg_sched *dg_sched_onecycle(dg_optim *opt, dg_onecycle_opts opts);

/* Advance one step. DG_ERR (and the optimizer left as it was) when a
 * OneCycle schedule is run past total_steps. */
dg_status dg_sched_step(dg_sched *s);
/* The lr set by the last step (double, before the float rounding). */
double dg_sched_get_lr(const dg_sched *s);
/* Steps taken since creation (PyTorch's last_epoch). */
int64_t dg_sched_last_step(const dg_sched *s);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_SCHED_H */
