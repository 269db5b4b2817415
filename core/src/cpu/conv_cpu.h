/* conv_cpu.h - the CPU backend's convolution, pooling, dropout and
 * batch-norm kernels (conv_cpu.c): the cnn family of backend-impl.h. Not
 * installed. */
#ifndef DGRAD_CONV_CPU_H
#define DGRAD_CONV_CPU_H

#include "impl.h"

#ifdef __cplusplus
extern "C" {
#endif

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


#ifdef __cplusplus
}
#endif
#endif /* DGRAD_CONV_CPU_H */
