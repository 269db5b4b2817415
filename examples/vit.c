/* vit.c - the small vision transformer of mnist_vit (see vit.h). */
#include "vit.h"

#include "dgrad/ops.h"
#include "dgrad/ops_seq.h"

#define PATCH 7
#define SIDE 28
#define TOKENS ((SIDE / PATCH) * (SIDE / PATCH))

/* children of a block, in PyTorch's registration order */
enum { B_LN1, B_ATTN, B_LN2, B_FC1, B_FC2, B_N };

static dg_tensor *block_forward(dg_module *self, dg_tensor *x, void *state) {
    (void)state;
    dg_module *ln1 = dg_module_child(self, B_LN1), *ln2 = dg_module_child(self, B_LN2);
    dg_tensor *h = dg_module_forward(ln1, x);
    x = dg_add(x, dg_mha_forward(dg_module_child(self, B_ATTN), h, h, h, NULL, false));
    h = dg_gelu(dg_module_forward(dg_module_child(self, B_FC1), dg_module_forward(ln2, x)));
    return dg_add(x, dg_module_forward(dg_module_child(self, B_FC2), h));
}

/* children of the model: patch embedding, position embedding, the blocks,
 * the final norm, the head */
static dg_tensor *vit_forward(dg_module *self, dg_tensor *x, void *state) {
    const vit_cfg *c = state;
    if (!x) return NULL;
    if (x->ndim != 4 || x->shape[1] != 1 || x->shape[2] != SIDE || x->shape[3] != SIDE) {
        dg_set_error("vit: expected images [B, 1, 28, 28]");
        return NULL;
    }
    int64_t b = x->shape[0], s5[5] = { b, SIDE / PATCH, PATCH, SIDE / PATCH, PATCH };
    int64_t s3[3] = { b, TOKENS, PATCH * PATCH };
    int perm[5] = { 0, 1, 3, 2, 4 };   /* [B, row, col, 7, 7] */
    dg_tensor *patches = dg_reshape(dg_contiguous(dg_permute(dg_reshape(x, 5, s5), perm)), 3, s3);
    dg_tensor *h = dg_module_forward(dg_module_child(self, 0), patches);
    dg_tensor **pos;
    dg_module_parameters(dg_module_child(self, 1), &pos);
    h = dg_add(h, pos[0]);   /* [B, 16, W] + [16, W] */
    bool training = dg_module_is_training(self);
    for (int l = 0; l < c->layers; l++)
        if (!(training && c->drop[l])) h = dg_module_forward(dg_module_child(self, 2 + l), h);
    h = dg_module_forward(dg_module_child(self, 2 + c->layers), h);
    int tok = 1;
    h = dg_mean_dims(h, 1, &tok, false);
    return dg_module_forward(dg_module_child(self, 3 + c->layers), h);
}

dg_module *vit_build(dg_ctx *ctx, vit_cfg *c) {
    const char *bad = c->layers < 1 || c->layers > VIT_MAX_LAYERS ? "layers"
                      : c->width < 1 || c->heads < 1 || c->width % c->heads ? "heads"
                      : c->mlp < 1 ? "mlp" : NULL;
    if (bad) {
        dg_set_error("vit: %s: %d layers (1 to %d), width %d, %d heads (must divide the width), mlp %d", bad,
                     c->layers, VIT_MAX_LAYERS, c->width, c->heads, c->mlp);
        return NULL;
    }
    if (!(c->layerdrop >= 0 && c->layerdrop < 1)) {
        dg_set_error("vit: layerdrop %g is not in [0, 1)", c->layerdrop);
        return NULL;
    }
    dg_module *kids[VIT_MAX_LAYERS + 4];
    int n = 0;
    kids[n++] = dg_nn_linear(ctx, PATCH * PATCH, c->width, true);
    kids[n++] = dg_nn_embedding(ctx, TOKENS, c->width, DG_NO_PADDING_IDX);
    for (int l = 0; l < c->layers; l++) {
        dg_module *b[B_N];
        b[B_LN1] = dg_nn_layer_norm(ctx, c->width, 1e-5f);
        b[B_ATTN] = dg_nn_multihead_attention(ctx, c->width, c->heads, true);
        b[B_LN2] = dg_nn_layer_norm(ctx, c->width, 1e-5f);
        b[B_FC1] = dg_nn_linear(ctx, c->width, c->mlp, true);
        b[B_FC2] = dg_nn_linear(ctx, c->mlp, c->width, true);
        for (int i = 0; i < B_N; i++)
            if (!b[i]) return NULL;
        kids[n++] = dg_nn_custom(ctx, "vit_block", block_forward, NULL, B_N, b);
    }
    kids[n++] = dg_nn_layer_norm(ctx, c->width, 1e-5f);
    kids[n++] = dg_nn_linear(ctx, c->width, 10, true);
    for (int i = 0; i < n; i++)
        if (!kids[i]) return NULL;
    return dg_nn_custom(ctx, "vit", vit_forward, c, n, kids);
}

/* splitmix64: one well-mixed value per (seed, step, rank, block) */
static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int vit_begin_step(vit_cfg *c, int64_t step, int rank) {
    int dropped = 0;
    for (int l = 0; l < c->layers; l++) {
        uint64_t u = mix(mix(mix(mix(c->seed) ^ (uint64_t)step) ^ (uint64_t)rank) ^ (uint64_t)l);
        c->drop[l] = (double)(u >> 11) * 0x1.0p-53 < c->layerdrop;
        dropped += c->drop[l];
    }
    return dropped;
}
