/* seq_cpu.h - the CPU kernels of the seq family (backend-impl.h's
 * dg_backend_seq): activations, layer norm, indexing, where, and the LSTM
 * and GRU recurrences. Each does what its slot's comment says. Internal:
 * not installed. */
#ifndef DGRAD_SEQ_CPU_H
#define DGRAD_SEQ_CPU_H

#include "backend-impl.h"

void dg__cpu_act_fwd(dg_act act, float *y, const float *x, int64_t n);
void dg__cpu_act_bwd(dg_act act, float *gx, const float *gy, const float *x, const float *y,
                     int64_t n, bool acc);
void dg__cpu_layer_norm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w,
                            const float *b, int64_t rows, int64_t d, float eps);
void dg__cpu_layer_norm_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *mean, const float *rstd, const float *w, int64_t rows,
                            int64_t d, bool acc_dx, bool acc_dw, bool acc_db);
void dg__cpu_index_fwd(float *out, const float *x, const int32_t *idx, int64_t outer, int64_t nx,
                       int64_t ni, int64_t inner, bool per_element);
void dg__cpu_index_bwd(float *dx, const float *dout, const int32_t *idx, int64_t outer, int64_t nx,
                       int64_t ni, int64_t inner, bool per_element, int64_t skip);
void dg__cpu_mask_from(uint8_t *m, const dg_tensor *cond);
void dg__cpu_where(float *out, const uint8_t *m, const float *a, const float *b, int64_t n);
void dg__cpu_where_bwd(float *ga, float *gb, const uint8_t *m, const float *g, int64_t n);
void dg__cpu_attn_fwd(const dg_attn_geom *g, const float *q, const float *k, const float *v,
                      const uint8_t *pad, float *o, float *p, float *work);
void dg__cpu_attn_bwd(const dg_attn_geom *g, const float *q, const float *k, const float *v,
                      const float *p, const float *go, float *gq, float *gk, float *gv, bool acc_q,
                      bool acc_k, bool acc_v, float *work);
void dg__cpu_rnn_fwd(const dg_rnn_geom *g, const dg_rnn_bufs *s);
void dg__cpu_rnn_bwd(const dg_rnn_geom *g, const dg_rnn_bufs *s, const float *dy, const float *dhn,
                     const float *dcn, float *dxp, float *dw_hh, bool acc_w, float *db_hh,
                     bool acc_b, float *dh0, float *dc0, float *work);

#endif /* DGRAD_SEQ_CPU_H */
