/* cnn-impl.h - the convolution, pooling, dropout and batch-norm kernels of
 * each backend (the dg_backend slots from im2col to bn_bwd, see impl.h).
 * CPU: conv_cpu.c; CUDA: cuda_conv.cu. Not installed. */
#ifndef DGRAD_CNN_IMPL_H
#define DGRAD_CNN_IMPL_H

#include "impl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The hash behind dropout_mask on every backend: 24 uniform bits of
 * (seed, i) as a float in [0, 1). */
#define DG_DROPOUT_MIX(seed, i, out)                                         \
    do {                                                                     \
        uint64_t dg_z_ = (seed) + ((uint64_t)(i) + 1) * 0x9E3779B97F4A7C15ull; \
        dg_z_ = (dg_z_ ^ (dg_z_ >> 30)) * 0xBF58476D1CE4E5B9ull;             \
        dg_z_ = (dg_z_ ^ (dg_z_ >> 27)) * 0x94D049BB133111EBull;             \
        dg_z_ ^= dg_z_ >> 31;                                                \
        (out) = (float)(dg_z_ >> 40) * (1.0f / 16777216.0f);                 \
    } while (0)

void dg__cpu_im2col(float *col, const float *x, const dg_conv_geom *g);
void dg__cpu_col2im(float *x, const float *col, const dg_conv_geom *g, bool acc);
void dg__cpu_maxpool_fwd(float *out, int32_t *idx, const float *x, const dg_conv_geom *g);
void dg__cpu_maxpool_bwd(float *dx, const float *dout, const int32_t *idx,
                         const dg_conv_geom *g, bool acc);
void dg__cpu_avgpool_fwd(float *out, const float *x, const dg_conv_geom *g);
void dg__cpu_avgpool_bwd(float *dx, const float *dout, const dg_conv_geom *g, bool acc);
void dg__cpu_dropout_mask(float *mask, int64_t n, float p, uint64_t seed);
void dg__cpu_bn_stats(float *mean, float *invstd, float *run_mean, float *run_var,
                      const float *x, int64_t n, int64_t c, int64_t hw, float momentum,
                      float eps, bool training);
void dg__cpu_bn_stats_fwd(float *y, float *mean, float *invstd, float *run_mean, float *run_var,
                          const float *x, const float *w, const float *b, int64_t n, int64_t c,
                          int64_t hw, float momentum, float eps);
void dg__cpu_bn_pool_fwd(float *out, int32_t *idx, float *mean, float *invstd, float *run_mean,
                         float *run_var, const float *x, const float *w, const float *b, int64_t n,
                         int64_t c, int64_t h, int64_t wd, float momentum, float eps, bool training,
                         bool relu);
void dg__cpu_bn_pool_bwd(float *dx, float *dw, float *db, const float *gout, const int32_t *idx,
                         const float *x, const float *mean, const float *invstd, const float *w,
                         int64_t n, int64_t c, int64_t h, int64_t wd, bool training, bool acc_dw,
                         bool acc_db);
void dg__cpu_bn_fwd(float *y, const float *x, const float *mean, const float *invstd,
                    const float *w, const float *b, int64_t n, int64_t c, int64_t hw);
void dg__cpu_bn_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                    const float *mean, const float *invstd, const float *w, int64_t n,
                    int64_t c, int64_t hw, bool training, bool acc_dx, bool acc_dw, bool acc_db);

#ifdef DG_HAVE_CUDA
void dg__cuda_im2col(float *col, const float *x, const dg_conv_geom *g);
void dg__cuda_col2im(float *x, const float *col, const dg_conv_geom *g, bool acc);
void dg__cuda_maxpool_fwd(float *out, int32_t *idx, const float *x, const dg_conv_geom *g);
void dg__cuda_maxpool_bwd(float *dx, const float *dout, const int32_t *idx,
                          const dg_conv_geom *g, bool acc);
void dg__cuda_avgpool_fwd(float *out, const float *x, const dg_conv_geom *g);
void dg__cuda_avgpool_bwd(float *dx, const float *dout, const dg_conv_geom *g, bool acc);
void dg__cuda_dropout_mask(float *mask, int64_t n, float p, uint64_t seed);
void dg__cuda_bn_stats(float *mean, float *invstd, float *run_mean, float *run_var,
                       const float *x, int64_t n, int64_t c, int64_t hw, float momentum,
                       float eps, bool training);
void dg__cuda_bn_fwd(float *y, const float *x, const float *mean, const float *invstd,
                     const float *w, const float *b, int64_t n, int64_t c, int64_t hw);
void dg__cuda_bn_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *mean, const float *invstd, const float *w, int64_t n,
                     int64_t c, int64_t hw, bool training, bool acc_dx, bool acc_dw, bool acc_db);
#endif

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_CNN_IMPL_H */
