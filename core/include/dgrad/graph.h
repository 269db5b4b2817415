/* dgrad/graph.h - capture a whole training step once, replay it (CUDA graphs).
 *
 * A step of define-by-run code (forward, backward, optimizer) launches the
 * same kernels on the same addresses every time once its shapes are fixed.
 * Capturing it records those launches in a graph that is then replayed with
 * a single launch per step, without the host-side cost of each op.
 *
 *     ...a few eager steps (warm-up: they size the arena)...
 *     dg_graph_begin_capture(ctx);
 *     loss = ...forward on x_fixed, y_fixed...;     queued, not run
 *     dg_optim_zero_grad(opt); dg_backward(loss); dg_optim_step(opt);
 *     dg_graph *g;
 *     if (dg_graph_end_capture(ctx, &g)) ...error...;
 *     dg_tensor *loss_out = dg_graph_output(g, loss);
 *     dg_ctx_reset_step(ctx);
 *     for each batch:
 *         copy the batch into x_fixed, y_fixed;     dg_tensor_copy (from dg_loader_next)
 *                                                   or dg_tensor_copy_from_host
 *         dg_graph_replay(g);
 *         now and then: dg_item(loss_out);          waits for the device
 *
 * Memory: the captured step's tensors live in the graph's own arena (as big
 * as the context's arena after the warm-up), so eager steps between replays
 * (evaluation, a last partial batch) do not disturb it. Inputs must be
 * persistent tensors or parameters: their addresses are baked into the
 * graph, their contents are read at each replay.
 *
 * What the captured step may not do, and what dgrad does about it:
 *  - read the device from the host (dg_item, dg_tensor_to_host), allocate
 *    device memory (the arena growing, a new persistent tensor or
 *    parameter) or free it: these abort with a message naming the capture.
 *    Warm up with eager steps of the same shapes first.
 *  - check cross-entropy labels: the check reads a flag back, so it is
 *    skipped while capturing. The kernels skip an out-of-range label (no
 *    bad memory access) but no error is reported: validate labels before
 *    (dg_dataset_load_* does).
 *  - upload host data (dg_tensor_from, dg_scalar of a changing value):
 *    put inputs into persistent tensors before each replay instead.
 *  - use host values that change per step: Adam and AdamW keep their
 *    bias corrections in device memory, updated by dg_graph_replay before
 *    each launch, and their step count advances with each replay; lr set
 *    with dg_optim_set_lr is picked up at the next replay. Other
 *    hyper-parameters are baked into the graph (Adam's betas, SGD's lr and
 *    momentum): recapture after changing them. SGD with momentum needs one
 *    eager step before the capture.
 *  - one dg_optim_step per optimizer per captured graph.
 *  - the communicator: capture single-process steps (a data-parallel
 *    all-reduce is not captured; with one rank there is nothing to reduce).
 *
 * Only the CUDA backend has graphs (dg_graph_supported). Errors follow
 * dgrad/base.h: DG_ERR and a message.
 */
#ifndef DGRAD_GRAPH_H
#define DGRAD_GRAPH_H

#include "dgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dg_graph dg_graph;   /* opaque */

/* True when ctx's backend can capture graphs (CUDA). */
bool dg_graph_supported(const dg_ctx *ctx);

/* Start recording: releases the current step (dg_ctx_reset_step), then
 * every op on ctx is recorded, not run, until dg_graph_end_capture. DG_ERR
 * when the backend has no graphs, a capture is already under way, or no
 * eager step has run yet (the arena would have to grow inside the capture). */
dg_status dg_graph_begin_capture(dg_ctx *ctx);

/* Stop recording and make the graph (*out, NULL on error). Always ends the
 * capture, also on error (then the step's tensors are garbage: reset the
 * step). The captured step's tensors stay valid on the host until
 * dg_ctx_reset_step, so that dg_graph_output can take what it needs. */
dg_status dg_graph_end_capture(dg_ctx *ctx, dg_graph **out);

/* A tensor of the captured step (its loss, say) that stays valid as long
 * as g: after each replay it holds that replay's values. t must come from
 * g's capture and dg_ctx_reset_step must not have run since. No autograd. */
dg_tensor *dg_graph_output(dg_graph *g, const dg_tensor *t);

/* A persistent float32 tensor, shaped as t (float32, from g's capture, as
 * for dg_graph_output), that each replay adds t's values to: a running sum
 * (of the loss, say) that the host reads now and then instead of after
 * every replay. It starts at zero; reset it with dg_init_constant. */
dg_tensor *dg_graph_output_sum(dg_graph *g, const dg_tensor *t);

/* Queue one replay on the context's stream and return without waiting:
 * first the host hooks (optimizer step counts and bias corrections), then
 * the launch. Ordered after everything queued before (copies into the
 * inputs included). */
dg_status dg_graph_replay(dg_graph *g);

/* Number of replays so far. */
int64_t dg_graph_replays(const dg_graph *g);

/* Waits for the device, then releases the graph and its arena. NULL is a
 * no-op. Free graphs before their context. */
void dg_graph_free(dg_graph *g);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_GRAPH_H */
