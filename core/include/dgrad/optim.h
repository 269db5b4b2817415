/* dgrad/optim.h - SGD, Adam and AdamW with PyTorch's update formulas
 * (torch.optim in PyTorch 1.13, single-tensor path) and defaults.
 *
 * An optimizer updates a list of parameters from their .grad. Its state
 * (momentum buffers, moments, step count) lives in persistent tensors of
 * the parameters' context.
 */
#ifndef DGRAD_OPTIM_H
#define DGRAD_OPTIM_H

#include "dgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dg_optim dg_optim;   /* opaque */

typedef struct {
    float lr;            /* required, > 0 */
    float momentum;      /* 0 */
    float dampening;     /* 0 */
    float weight_decay;  /* 0 */
    bool nesterov;       /* false; needs momentum > 0 and dampening == 0 */
} dg_sgd_opts;

typedef struct {
    float lr;            /* 1e-3 */
    float beta1, beta2;  /* 0.9, 0.999 */
    float eps;           /* 1e-8 */
    float weight_decay;  /* Adam: 0 (L2 added to the gradient);
                            AdamW: 1e-2 (decoupled) */
    bool amsgrad;        /* false */
} dg_adam_opts;

/* Defaults as in PyTorch. */
dg_sgd_opts dg_sgd_defaults(float lr);
dg_adam_opts dg_adam_defaults(void);
dg_adam_opts dg_adamw_defaults(void);

/* NULL and an error message on bad hyper-parameters (negative lr, betas
 * outside [0, 1), nesterov without momentum, ...). */
dg_optim *dg_optim_sgd(dg_tensor *const *params, int n, dg_sgd_opts opts);
dg_optim *dg_optim_adam(dg_tensor *const *params, int n, dg_adam_opts opts);
dg_optim *dg_optim_adamw(dg_tensor *const *params, int n, dg_adam_opts opts);
void dg_optim_free(dg_optim *opt);

/* One update of every parameter that has a gradient (dg_param_has_grad);
 * the others are left as they are, their state too, as PyTorch skips a
 * parameter whose .grad is None. Inside a CUDA graph capture every
 * parameter must have one. */
void dg_optim_step(dg_optim *opt);
/* Zero the gradients of this optimizer's parameters and set them to
 * "none", as PyTorch 2's zero_grad() (set_to_none=True). */
void dg_optim_zero_grad(dg_optim *opt);

float dg_optim_get_lr(const dg_optim *opt);
void dg_optim_set_lr(dg_optim *opt, float lr);
/* Number of dg_optim_step calls. */
int64_t dg_optim_step_count(const dg_optim *opt);
/* Updates parameter i (index in the optimizer's list) has taken, Adam's
 * bias-correction step for it (PyTorch's state['step']): behind the step
 * count by the steps it had no gradient. */
int64_t dg_optim_param_step_count(const dg_optim *opt, int i);
void dg_optim_set_param_step_count(dg_optim *opt, int i, int64_t steps);
/* State tensors for checkpoints: for each parameter i, slot s (SGD: s=0
 * momentum buffer; Adam: s=0 exp_avg, 1 exp_avg_sq, 2 max_exp_avg_sq).
 * NULL where the optimizer has no such state (yet). */
dg_tensor *dg_optim_state(dg_optim *opt, int param_index, int slot);
int dg_optim_num_slots(const dg_optim *opt);
/* Sets the step count and every parameter's. */
void dg_optim_set_step_count(dg_optim *opt, int64_t steps);

/* Momentum as learning-rate schedulers cycle it: SGD's momentum, Adam's
 * beta1. set returns DG_ERR (and an error) for SGD built without momentum
 * (it has no momentum buffers). */
float dg_optim_get_momentum(const dg_optim *opt);
dg_status dg_optim_set_momentum(dg_optim *opt, float momentum);

/* torch.nn.utils.clip_grad_norm_ (2-norm): total = the norm of all n
 * parameters' gradients together; when total > max_norm every gradient is
 * scaled by max_norm / (total + 1e-6). Returns total. */
float dg_clip_grad_norm(dg_tensor *const *params, int n, float max_norm);

/* Whether every gradient of the context's parameters is finite (no NaN or
 * infinity), as GradScaler's found_inf check. When not, *first_bad (if
 * not NULL) gets the index (dg_ctx_params order) of the first parameter
 * with a non-finite gradient. One pass over the flat gradient buffer on the
 * CPU; a GPU context copies it to the host first. */
bool dg_grads_finite(dg_ctx *ctx, int *first_bad);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_OPTIM_H */
