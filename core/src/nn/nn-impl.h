/* nn-impl.h - the module record, shared by nn.c and the module families in
 * core/src/nn/ (seq.c). Not installed. */
#ifndef DGRAD_NN_IMPL_H
#define DGRAD_NN_IMPL_H

#include "dgrad/nn.h"
#include "impl.h"

typedef dg_tensor *(*dg_forward_fn)(dg_module *m, dg_tensor *x);

struct dg_module {
    dg_ctx *ctx;
    dg_forward_fn forward;
    char name[96];
    bool training;
    dg_tensor *weight, *bias;
    dg_module **children;
    int nchildren;
    dg_tensor **params;      /* this module's and its children's, in order */
    int nparams;
    /* convolutional nets (the end of nn.c) */
    int64_t cfg[7];          /* conv: stride, padding, dilation, groups; pools:
                                kernel, stride, padding */
    float fcfg[3];           /* dropout p; batch norm momentum, eps; layer norm eps */
    dg_tensor *bufs[2];      /* this module's buffers (batch norm) */
    int nbufs;
    dg_tensor **all_bufs;    /* with the children's, built on first request */
    int nall_bufs;
    /* module families outside nn.c (seq.c): their kind for
     * dg_module_get_info (DG_MODULE_OTHER: nn.c's own rules) and their
     * state (context memory) */
    dg_module_kind kind;
    void *ext;
};

/* A module of ctx's memory with forward fwd, in training mode. */
dg_module *dg__module_new(dg_ctx *ctx, dg_forward_fn fwd);

#endif /* DGRAD_NN_IMPL_H */
