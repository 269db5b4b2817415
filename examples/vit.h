/* vit.h - the small vision transformer of mnist_vit, as a module that
 * examples and tests share.
 *
 *   [B, 1, 28, 28] -> 7x7 patches [B, 16, 49] -> Linear 49->width
 *   + position embedding (nn.Embedding(16, width), N(0, 1))
 *   -> layers x pre-norm block:  x + MHA(LN(x)),  x + MLP(LN(x))
 *      (MLP: Linear width->mlp, GELU, Linear mlp->width)
 *   -> LayerNorm -> mean over the tokens -> Linear width->10
 *
 * LayerDrop (Fan et al., 2019): in training, each block is skipped as a
 * whole with probability p, decided before the step by vit_begin_step from
 * (seed, step, rank, block), so a run is reproducible and resumes exactly,
 * and the ranks of one step drop different blocks. Evaluation runs every
 * block (fairseq's LayerDrop does not rescale).
 */
#ifndef DG_EXAMPLES_VIT_H
#define DG_EXAMPLES_VIT_H

#include "dgrad/nn_seq.h"

#include <stdbool.h>
#include <stdint.h>

#define VIT_MAX_LAYERS 32

typedef struct {
    int width, layers, heads, mlp;   /* 64, 4, 4, 128 */
    double layerdrop;                /* p */
    uint64_t seed;                   /* the run's seed */
    bool drop[VIT_MAX_LAYERS];       /* this step's choice (vit_begin_step) */
} vit_cfg;

/* The model; its forward reads cfg (which must outlive it). NULL and a
 * message on bad settings. */
dg_module *vit_build(dg_ctx *ctx, vit_cfg *cfg);
/* This step's LayerDrop choice for this rank; returns how many blocks are
 * dropped. */
int vit_begin_step(vit_cfg *cfg, int64_t step, int rank);

#endif
