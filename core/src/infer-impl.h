/* infer-impl.h - the inference graph (IR) shared by infer.c (build from a
 * module, shape checks, execution) and io/onnx.c (ONNX files to and from
 * it). Not installed.
 *
 * A graph has one float input [batch, sample...] and one output; values
 * are numbered, each made by the graph input, a constant (float data in the
 * model's one weight blob) or a node. Shapes carry the batch as dim 0 with
 * the value -1 (DG_IR_BATCH): every supported op keeps dim 0 the batch. */
#ifndef DGRAD_INFER_IMPL_H
#define DGRAD_INFER_IMPL_H

#include "dgrad/infer.h"

#define DG_IR_BATCH (-1)

typedef enum {
    DG_IR_GEMM = 0,        /* in, weight [out, in] (pre-transposed), bias [out] or -1 */
    DG_IR_MATMUL,          /* in, weight [k, n] */
    DG_IR_ADD,             /* in, const (broadcast) */
    DG_IR_CONV,            /* in, weight, bias or -1 */
    DG_IR_BATCH_NORM,      /* in, scale, bias, mean, var */
    DG_IR_MAX_POOL,
    DG_IR_AVG_POOL,        /* counts padding (count_include_pad) */
    DG_IR_GLOBAL_AVG_POOL,
    DG_IR_RELU,
    DG_IR_FLATTEN,         /* axis 1 */
    DG_IR_RESHAPE,         /* shape[]: ONNX's target (0 copies, one -1); dim 0 stays the batch */
    DG_IR_IDENTITY,        /* Identity, inference Dropout, zero Pad */
    DG_IR_DROPOUT,         /* identity, written back as Dropout */
    DG_IR_SOFTMAX,
    DG_IR_LOG_SOFTMAX,
    DG_IR_OP_COUNT
} dg_ir_op;

typedef enum { DG_IR_VALUE_INPUT = 0, DG_IR_VALUE_CONST, DG_IR_VALUE_NODE } dg_ir_value_kind;

typedef struct {
    char *name;                 /* owned */
    dg_ir_value_kind kind;
    int ndim;
    int64_t shape[DG_MAX_DIMS]; /* dim 0 DG_IR_BATCH for input and node values */
    size_t offset;              /* const: first float in the blob */
} dg_ir_value;

typedef struct {
    dg_ir_op op;
    char *name;                 /* owned, for messages */
    int in[5], nin;             /* value ids; -1 for an absent optional one */
    int out;
    int64_t kernel[2], stride[2], pad[2], dilation[2], group;  /* conv, pools: {h, w} */
    int axis;                   /* softmax, flatten (1 once checked) */
    int ndim;                   /* reshape target */
    int64_t shape[DG_MAX_DIMS];
    float eps, momentum;        /* batch norm (momentum: PyTorch's, for export) */
    float ratio;                /* dropout */
} dg_ir_node;

typedef struct {
    dg_ir_value *values;
    int nvalues, values_cap;
    dg_ir_node *nodes;
    int nnodes, nodes_cap;
    float *blob;                /* every constant's floats */
    size_t nblob, blob_cap;
    int input, output;          /* value ids */
} dg_ir;

struct dg_infer_model {
    dg_ir ir;
    char name[128];             /* where it came from, for messages */
    int64_t sample_in, sample_out;   /* floats per sample */
};

/* Building (infer.c). Names are copied. -1 and a message on error (only
 * out of memory). */
void dg__ir_free(dg_ir *ir);
int dg__ir_value(dg_ir *ir, const char *name, dg_ir_value_kind kind, int ndim, const int64_t *shape);
/* A constant with n floats copied from data (NULL: zeros). */
int dg__ir_const(dg_ir *ir, const char *name, int ndim, const int64_t *shape, const float *data);
/* Value id of name, or -1. */
int dg__ir_find(const dg_ir *ir, const char *name);
dg_ir_node *dg__ir_node(dg_ir *ir, dg_ir_op op, const char *name);
/* ONNX's op name ("Gemm"), for messages and the writer. */
const char *dg__ir_op_name(dg_ir_op op);
/* Shapes of every node value from the input's, checking each node's
 * operands; fills the model's sample sizes. DG_ERR naming the node. */
dg_status dg__ir_check(dg_infer_model *m);
/* A model that takes ir (moved in; *ir zeroed). NULL on error, ir freed. */
dg_infer_model *dg__infer_model_new(dg_ir *ir, const char *name);

#endif /* DGRAD_INFER_IMPL_H */
