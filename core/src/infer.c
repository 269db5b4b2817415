/* infer.c - inference graphs: built from a module or by the ONNX reader
 * (io/onnx.c), shape-checked once, run with dgrad's ops without autograd
 * by per-worker contexts that share the model's weights. */
#include "dgrad/checkpoint.h"
#include "dgrad/infer.h"
#include "dgrad/ops.h"
#include "impl.h"
#include "infer-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the graph ------------------------------------------------------------ */

static const char *const op_names[DG_IR_OP_COUNT] = {
    [DG_IR_GEMM] = "Gemm", [DG_IR_MATMUL] = "MatMul", [DG_IR_ADD] = "Add",
    [DG_IR_CONV] = "Conv", [DG_IR_BATCH_NORM] = "BatchNormalization",
    [DG_IR_MAX_POOL] = "MaxPool", [DG_IR_AVG_POOL] = "AveragePool",
    [DG_IR_GLOBAL_AVG_POOL] = "GlobalAveragePool", [DG_IR_RELU] = "Relu",
    [DG_IR_FLATTEN] = "Flatten", [DG_IR_RESHAPE] = "Reshape", [DG_IR_IDENTITY] = "Identity",
    [DG_IR_DROPOUT] = "Dropout", [DG_IR_SOFTMAX] = "Softmax", [DG_IR_LOG_SOFTMAX] = "LogSoftmax",
};

const char *dg__ir_op_name(dg_ir_op op) {
    DG_ASSERT(op >= 0 && op < DG_IR_OP_COUNT);
    return op_names[op];
}

void dg__ir_free(dg_ir *ir) {
    if (!ir) return;
    for (int i = 0; i < ir->nvalues; i++) free(ir->values[i].name);
    for (int i = 0; i < ir->nnodes; i++) free(ir->nodes[i].name);
    free(ir->values);
    free(ir->nodes);
    free(ir->blob);
    memset(ir, 0, sizeof *ir);
}

/* Room for one more element of size es in *arr (cap *cap); false if out of memory. */
static bool grow(void **arr, int n, int *cap, size_t es) {
    if (n < *cap) return true;
    int nc = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)nc * es);
    if (!p) return false;
    *arr = p;
    *cap = nc;
    return true;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

int dg__ir_value(dg_ir *ir, const char *name, dg_ir_value_kind kind, int ndim, const int64_t *shape) {
    DG_ASSERT(ndim >= 0 && ndim <= DG_MAX_DIMS);
    if (!grow((void **)&ir->values, ir->nvalues, &ir->values_cap, sizeof *ir->values)) {
        dg_set_error("inference graph: out of memory");
        return -1;
    }
    dg_ir_value *v = &ir->values[ir->nvalues];
    memset(v, 0, sizeof *v);
    v->name = dup_str(name);
    if (!v->name) {
        dg_set_error("inference graph: out of memory");
        return -1;
    }
    v->kind = kind;
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) v->shape[i] = shape[i];
    return ir->nvalues++;
}

int dg__ir_const(dg_ir *ir, const char *name, int ndim, const int64_t *shape, const float *data) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    if (ir->nblob + n > ir->blob_cap) {
        size_t nc = ir->blob_cap ? ir->blob_cap : 4096;
        while (nc < ir->nblob + n) nc *= 2;
        float *p = realloc(ir->blob, nc * sizeof *p);
        if (!p) {
            dg_set_error("inference graph: out of memory for %zu weights", n);
            return -1;
        }
        ir->blob = p;
        ir->blob_cap = nc;
    }
    int id = dg__ir_value(ir, name, DG_IR_VALUE_CONST, ndim, shape);
    if (id < 0) return -1;
    ir->values[id].offset = ir->nblob;
    if (data) memcpy(ir->blob + ir->nblob, data, n * sizeof *data);
    else memset(ir->blob + ir->nblob, 0, n * sizeof *ir->blob);
    ir->nblob += n;
    return id;
}

int dg__ir_find(const dg_ir *ir, const char *name) {
    for (int i = ir->nvalues - 1; i >= 0; i--)
        if (!strcmp(ir->values[i].name, name)) return i;
    return -1;
}

dg_ir_node *dg__ir_node(dg_ir *ir, dg_ir_op op, const char *name) {
    if (!grow((void **)&ir->nodes, ir->nnodes, &ir->nodes_cap, sizeof *ir->nodes)) {
        dg_set_error("inference graph: out of memory");
        return NULL;
    }
    dg_ir_node *n = &ir->nodes[ir->nnodes];
    memset(n, 0, sizeof *n);
    n->name = dup_str(name);
    if (!n->name) {
        dg_set_error("inference graph: out of memory");
        return NULL;
    }
    ir->nnodes++;
    n->op = op;
    n->out = -1;
    for (int i = 0; i < 5; i++) n->in[i] = -1;
    n->dilation[0] = n->dilation[1] = 1;
    n->stride[0] = n->stride[1] = 1;
    n->group = 1;
    return n;
}

/* ---- shape checks ------------------------------------------------------------ */

static int64_t numel_of(const dg_ir_value *v) {
    int64_t n = 1;
    for (int i = 0; i < v->ndim; i++) n *= v->shape[i];
    return n;
}

static const char *shape_str(const dg_ir_value *v, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < v->ndim && k < n; i++) {
        if (v->shape[i] == DG_IR_BATCH) k += (size_t)snprintf(buf + k, n - k, "%sbatch", i ? ", " : "");
        else k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)v->shape[i]);
    }
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* A constant operand of node nd, or NULL (message) when it is not one. */
static const dg_ir_value *const_in(const dg_infer_model *m, const dg_ir_node *nd, int i, const char *what) {
    if (nd->in[i] < 0) {
        dg_set_error("%s: node '%s' (%s) lacks its %s", m->name, nd->name, dg__ir_op_name(nd->op), what);
        return NULL;
    }
    const dg_ir_value *v = &m->ir.values[nd->in[i]];
    if (v->kind != DG_IR_VALUE_CONST) {
        dg_set_error("%s: node '%s' (%s): its %s '%s' must be a constant (an initializer), not computed",
                     m->name, nd->name, dg__ir_op_name(nd->op), what, v->name);
        return NULL;
    }
    return v;
}

/* Output size of a conv or pool along one dim, or <= 0. */
static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
    return s > 0 ? (in + 2 * p - d * (k - 1) - 1) / s + 1 : 0;
}

static dg_status check_node(dg_infer_model *m, dg_ir_node *nd) {
    dg_ir *ir = &m->ir;
    const dg_ir_value *x = &ir->values[nd->in[0]];
    dg_ir_value *y = &ir->values[nd->out];
    const char *op = dg__ir_op_name(nd->op);
    char b1[96], b2[96];
#define BAD(...) do { \
        char msg_[256]; snprintf(msg_, sizeof msg_, __VA_ARGS__); \
        return dg_set_error("%s: node '%s' (%s): %s", m->name, nd->name, op, msg_); } while (0)
    if (x->kind == DG_IR_VALUE_CONST) BAD("its input '%s' is a constant; dgrad runs ops on the batch only", x->name);
    y->ndim = x->ndim;
    memcpy(y->shape, x->shape, sizeof y->shape);
    switch (nd->op) {
    case DG_IR_GEMM: {
        const dg_ir_value *w = const_in(m, nd, 1, "weight");
        if (!w) return DG_ERR;
        if (x->ndim != 2 || w->ndim != 2) BAD("input %s and weight %s must be 2-D", shape_str(x, b1, 96), shape_str(w, b2, 96));
        if (x->shape[1] != w->shape[1])
            BAD("input has %lld features, weight %s expects %lld", (long long)x->shape[1], shape_str(w, b2, 96),
                (long long)w->shape[1]);
        if (nd->in[2] >= 0) {
            const dg_ir_value *b = const_in(m, nd, 2, "bias");
            if (!b) return DG_ERR;
            if (numel_of(b) != w->shape[0] || b->ndim != 1) BAD("bias %s does not fit %lld outputs", shape_str(b, b1, 96), (long long)w->shape[0]);
        }
        y->shape[1] = w->shape[0];
        break;
    }
    case DG_IR_MATMUL: {
        const dg_ir_value *w = const_in(m, nd, 1, "weight");
        if (!w) return DG_ERR;
        if (x->ndim < 2 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[0])
            BAD("shapes %s and %s do not fit", shape_str(x, b1, 96), shape_str(w, b2, 96));
        y->shape[y->ndim - 1] = w->shape[1];
        break;
    }
    case DG_IR_ADD: {
        const dg_ir_value *c = const_in(m, nd, 1, "second operand");
        if (!c) return DG_ERR;
        bool ok = c->ndim <= x->ndim && !(c->ndim == x->ndim && c->shape[0] != 1);
        for (int i = 0; ok && i < c->ndim; i++) {
            int64_t cd = c->shape[c->ndim - 1 - i], xd = x->shape[x->ndim - 1 - i];
            ok = cd == 1 || cd == xd;
        }
        if (!ok) BAD("the constant %s does not broadcast to the input %s without changing it",
                     shape_str(c, b1, 96), shape_str(x, b2, 96));
        break;
    }
    case DG_IR_CONV: {
        const dg_ir_value *w = const_in(m, nd, 1, "weight");
        if (!w) return DG_ERR;
        if (x->ndim != 4 || w->ndim != 4) BAD("input %s and weight %s must be 4-D (NCHW)", shape_str(x, b1, 96), shape_str(w, b2, 96));
        if (nd->group < 1 || x->shape[1] != w->shape[1] * nd->group || w->shape[0] % nd->group)
            BAD("input %s has %lld channels, weight %s with group %lld expects %lld", shape_str(x, b1, 96),
                (long long)x->shape[1], shape_str(w, b2, 96), (long long)nd->group, (long long)(w->shape[1] * nd->group));
        if (nd->in[2] >= 0) {
            const dg_ir_value *b = const_in(m, nd, 2, "bias");
            if (!b) return DG_ERR;
            if (numel_of(b) != w->shape[0] || b->ndim != 1) BAD("bias %s does not fit %lld channels", shape_str(b, b1, 96), (long long)w->shape[0]);
        }
        nd->kernel[0] = w->shape[2];
        nd->kernel[1] = w->shape[3];
        y->shape[1] = w->shape[0];
        for (int i = 0; i < 2; i++) {
            y->shape[2 + i] = out_size(x->shape[2 + i], nd->kernel[i], nd->stride[i], nd->pad[i], nd->dilation[i]);
            if (y->shape[2 + i] <= 0 || nd->dilation[i] < 1 || nd->pad[i] < 0)
                BAD("kernel %lldx%lld, stride, padding and dilation do not fit the input %s", (long long)nd->kernel[0],
                    (long long)nd->kernel[1], shape_str(x, b1, 96));
        }
        break;
    }
    case DG_IR_BATCH_NORM: {
        if (x->ndim < 2) BAD("input %s has no channel dim", shape_str(x, b1, 96));
        static const char *const what[4] = { "scale", "bias", "mean", "var" };
        for (int i = 0; i < 4; i++) {
            const dg_ir_value *c = const_in(m, nd, 1 + i, what[i]);
            if (!c) return DG_ERR;
            if (c->ndim != 1 || c->shape[0] != x->shape[1])
                BAD("%s %s does not fit the %lld channels of %s", what[i], shape_str(c, b1, 96), (long long)x->shape[1],
                    shape_str(x, b2, 96));
        }
        break;
    }
    case DG_IR_MAX_POOL:
    case DG_IR_AVG_POOL:
        if (x->ndim != 4) BAD("input %s must be 4-D (NCHW)", shape_str(x, b1, 96));
        for (int i = 0; i < 2; i++) {
            if (nd->kernel[i] < 1 || nd->stride[i] < 1 || nd->pad[i] < 0 || nd->pad[i] > nd->kernel[i] / 2)
                BAD("kernel %lldx%lld, stride %lldx%lld, padding %lldx%lld: kernel and stride must be positive, "
                    "padding at most half the kernel", (long long)nd->kernel[0], (long long)nd->kernel[1],
                    (long long)nd->stride[0], (long long)nd->stride[1], (long long)nd->pad[0], (long long)nd->pad[1]);
            y->shape[2 + i] = out_size(x->shape[2 + i], nd->kernel[i], nd->stride[i], nd->pad[i], 1);
            if (y->shape[2 + i] <= 0) BAD("kernel larger than the padded input %s", shape_str(x, b1, 96));
        }
        break;
    case DG_IR_GLOBAL_AVG_POOL:
        if (x->ndim != 4) BAD("input %s must be 4-D (NCHW)", shape_str(x, b1, 96));
        y->shape[2] = y->shape[3] = 1;
        break;
    case DG_IR_FLATTEN: {
        if (x->ndim < 2) BAD("input %s has fewer than 2 dims", shape_str(x, b1, 96));
        int a = nd->axis < 0 ? nd->axis + x->ndim : nd->axis;
        bool ok = a >= 1 && a < x->ndim;
        for (int i = 1; ok && i < a; i++) ok = x->shape[i] == 1;
        if (!ok) BAD("axis %d of %s would merge the batch dim with others", nd->axis, shape_str(x, b1, 96));
        nd->axis = 1;
        int64_t n = 1;
        for (int i = 1; i < x->ndim; i++) n *= x->shape[i];
        y->ndim = 2;
        y->shape[1] = n;
        break;
    }
    case DG_IR_RESHAPE: {
        /* ONNX's rules: 0 copies the input's dim, one -1 is inferred; dim 0
         * must stay the batch: 0, or -1 with every other dim given */
        int64_t n = 1, known = 1;
        int infer = -1;
        if (nd->ndim < 1 || nd->ndim > DG_MAX_DIMS) BAD("target shape has %d dims", nd->ndim);
        if (nd->shape[0] != 0 && nd->shape[0] != -1)
            BAD("target shape fixes the batch dim to %lld; export with a dynamic batch", (long long)nd->shape[0]);
        for (int i = 1; i < x->ndim; i++) n *= x->shape[i];
        y->ndim = nd->ndim;
        y->shape[0] = DG_IR_BATCH;
        for (int i = 1; i < nd->ndim; i++) {
            int64_t v = nd->shape[i];
            if (v == 0) {
                if (i >= x->ndim) BAD("target entry %d is 0 but the input %s has no dim %d", i, shape_str(x, b1, 96), i);
                v = x->shape[i];
            }
            if (v == -1 && infer < 0 && nd->shape[0] == 0) infer = i;
            else if (v <= 0) BAD("target shape entry %d is %lld", i, (long long)nd->shape[i]);
            else known *= v;
            y->shape[i] = v;
        }
        if (infer > 0) {
            if (n % known) BAD("cannot reshape %s with a -1 entry", shape_str(x, b1, 96));
            y->shape[infer] = n / known;
        } else if (known != n) {
            BAD("cannot reshape %s to %lld elements per sample", shape_str(x, b1, 96), (long long)known);
        }
        break;
    }
    case DG_IR_SOFTMAX:
    case DG_IR_LOG_SOFTMAX: {
        int a = nd->axis < 0 ? nd->axis + x->ndim : nd->axis;
        if (a < 1 || a >= x->ndim) BAD("axis %d is the batch or out of range for %s", nd->axis, shape_str(x, b1, 96));
        nd->axis = a;
        break;
    }
    case DG_IR_RELU:
    case DG_IR_IDENTITY:
    case DG_IR_DROPOUT:
        break;
    case DG_IR_OP_COUNT:
        DG_ASSERT(!"bad op");
    }
#undef BAD
    return DG_OK;
}

dg_status dg__ir_check(dg_infer_model *m) {
    dg_ir *ir = &m->ir;
    DG_ASSERT(ir->input >= 0 && ir->input < ir->nvalues && ir->output >= 0 && ir->output < ir->nvalues);
    const dg_ir_value *in = &ir->values[ir->input];
    if (in->ndim < 1 || in->ndim > DG_MAX_DIMS || in->shape[0] != DG_IR_BATCH)
        return dg_set_error("%s: the input '%s' must have the batch as dim 0", m->name, in->name);
    for (int i = 1; i < in->ndim; i++)
        if (in->shape[i] <= 0)
            return dg_set_error("%s: the input '%s' has dim %d of size %lld; every dim but the batch must be fixed",
                                m->name, in->name, i, (long long)in->shape[i]);
    for (int i = 0; i < ir->nnodes; i++)
        if (check_node(m, &ir->nodes[i])) return DG_ERR;
    const dg_ir_value *out = &ir->values[ir->output];
    if (out->kind == DG_IR_VALUE_CONST)
        return dg_set_error("%s: the output '%s' is a constant", m->name, out->name);
    m->sample_in = 1;
    m->sample_out = 1;
    for (int i = 1; i < in->ndim; i++) m->sample_in *= in->shape[i];
    for (int i = 1; i < out->ndim; i++) m->sample_out *= out->shape[i];
    return DG_OK;
}

/* ---- models ------------------------------------------------------------------ */

dg_infer_model *dg__infer_model_new(dg_ir *ir, const char *name) {
    dg_infer_model *m = calloc(1, sizeof *m);
    if (!m) {
        dg__ir_free(ir);
        dg_set_error("%s: out of memory", name);
        return NULL;
    }
    m->ir = *ir;
    memset(ir, 0, sizeof *ir);
    snprintf(m->name, sizeof m->name, "%s", name);
    if (dg__ir_check(m)) {
        dg_infer_model_free(m);
        return NULL;
    }
    return m;
}

void dg_infer_model_free(dg_infer_model *m) {
    if (!m) return;
    dg__ir_free(&m->ir);
    free(m);
}

static int sample_shape(const dg_ir_value *v, int64_t shape[DG_MAX_DIMS]) {
    for (int i = 1; i < v->ndim; i++) shape[i - 1] = v->shape[i];
    return v->ndim - 1;
}

int dg_infer_model_input_shape(const dg_infer_model *m, int64_t shape[DG_MAX_DIMS]) {
    return sample_shape(&m->ir.values[m->ir.input], shape);
}

int dg_infer_model_output_shape(const dg_infer_model *m, int64_t shape[DG_MAX_DIMS]) {
    return sample_shape(&m->ir.values[m->ir.output], shape);
}

int64_t dg_infer_model_input_size(const dg_infer_model *m) { return m->sample_in; }
int64_t dg_infer_model_output_size(const dg_infer_model *m) { return m->sample_out; }
int dg_infer_model_num_ops(const dg_infer_model *m) { return m->ir.nnodes; }
size_t dg_infer_model_num_weights(const dg_infer_model *m) { return m->ir.nblob; }

const char *dg_infer_model_op(const dg_infer_model *m, int i) {
    return i >= 0 && i < m->ir.nnodes ? dg__ir_op_name(m->ir.nodes[i].op) : NULL;
}

/* ---- from a module -------------------------------------------------------------- */

typedef struct {
    dg_ir *ir;
    int cur;                    /* value id of the running activation */
    int count;                  /* leaf modules so far */
    float *scratch;             /* host copies of weights */
    size_t scratch_n;
} from_module;

static int copy_const(from_module *fm, const char *name, const dg_tensor *t) {
    size_t n = (size_t)dg_numel(t);
    if (n > fm->scratch_n) {
        float *p = realloc(fm->scratch, n * sizeof *p);
        if (!p) {
            dg_set_error("dg_infer_model_from_module: out of memory");
            return -1;
        }
        fm->scratch = p;
        fm->scratch_n = n;
    }
    DG_ASSERT(t->dtype == DG_F32);
    dg_tensor_to_host(t, fm->scratch);
    return dg__ir_const(fm->ir, name, t->ndim, t->shape, fm->scratch);
}

static dg_status add_module(from_module *fm, dg_module *mod, const char *path) {
    dg_module_info mi;
    dg_module_get_info(mod, &mi);
    if (mi.kind == DG_MODULE_SEQUENTIAL) {
        for (int i = 0; i < mi.num_children; i++) {
            char p[96];
            snprintf(p, sizeof p, "%s%s%d", path, *path ? "." : "", i);
            if (add_module(fm, dg_module_child(mod, i), p)) return DG_ERR;
        }
        return DG_OK;
    }
    static const dg_ir_op ops[] = {
        [DG_MODULE_LINEAR] = DG_IR_GEMM, [DG_MODULE_CONV2D] = DG_IR_CONV,
        [DG_MODULE_BATCH_NORM2D] = DG_IR_BATCH_NORM, [DG_MODULE_MAX_POOL2D] = DG_IR_MAX_POOL,
        [DG_MODULE_AVG_POOL2D] = DG_IR_AVG_POOL, [DG_MODULE_RELU] = DG_IR_RELU,
        [DG_MODULE_FLATTEN] = DG_IR_FLATTEN, [DG_MODULE_DROPOUT] = DG_IR_DROPOUT,
    };
    if (mi.kind == DG_MODULE_OTHER || (size_t)mi.kind >= sizeof ops / sizeof ops[0])
        return dg_set_error("dg_infer_model_from_module: module %s (%s) is of a kind inference and ONNX "
                            "export do not support", *path ? path : "0", dg_module_name(mod));
    dg_ir_op op = ops[mi.kind];
    char name[160], vname[160];
    const char *p = *path ? path : "0";
    snprintf(name, sizeof name, "/%s/%s", p, dg__ir_op_name(op));
    dg_ir_node *nd = dg__ir_node(fm->ir, op, name);
    if (!nd) return DG_ERR;
    int ni = (int)(nd - fm->ir->nodes);
    int ins[5] = { fm->cur, -1, -1, -1, -1 }, nin = 1;
    const dg_tensor *consts[4] = { mi.weight, mi.bias, mi.running_mean, mi.running_var };
    static const char *const cnames[4] = { "weight", "bias", "running_mean", "running_var" };
    int nconst = op == DG_IR_BATCH_NORM ? 4 : (op == DG_IR_GEMM || op == DG_IR_CONV) ? 2 : 0;
    for (int i = 0; i < nconst; i++) {
        if (!consts[i]) {
            ins[nin++] = -1;
            continue;
        }
        snprintf(vname, sizeof vname, "%s.%s", p, cnames[i]);
        int id = copy_const(fm, vname, consts[i]);
        if (id < 0) return DG_ERR;
        ins[nin++] = id;
    }
    nd = &fm->ir->nodes[ni];   /* the node array does not move, values may */
    memcpy(nd->in, ins, sizeof ins);
    nd->nin = nin;
    for (int i = 0; i < 2; i++) {
        nd->kernel[i] = mi.kernel[i];
        nd->stride[i] = mi.kind == DG_MODULE_CONV2D || mi.kind == DG_MODULE_MAX_POOL2D ||
                        mi.kind == DG_MODULE_AVG_POOL2D ? mi.stride[i] : 1;
        nd->pad[i] = mi.padding[i];
        nd->dilation[i] = mi.kind == DG_MODULE_CONV2D ? mi.dilation[i] : 1;
    }
    if (mi.kind == DG_MODULE_CONV2D) nd->group = mi.groups;
    if (op == DG_IR_FLATTEN) nd->axis = 1;
    nd->eps = mi.eps;
    nd->momentum = mi.momentum;
    nd->ratio = mi.p;
    snprintf(vname, sizeof vname, "/%s/%s_output_0", p, dg__ir_op_name(op));
    int out = dg__ir_value(fm->ir, vname, DG_IR_VALUE_NODE, 0, NULL);
    if (out < 0) return DG_ERR;
    fm->ir->nodes[ni].out = out;
    fm->cur = out;
    fm->count++;
    return DG_OK;
}

dg_infer_model *dg_infer_model_from_module(dg_module *m, int ndim, const int64_t *sample_shape) {
    if (!m || ndim < 0 || ndim >= DG_MAX_DIMS || (ndim && !sample_shape)) {
        dg_set_error("dg_infer_model_from_module: %s", !m ? "module is NULL"
                     : "sample shape must have 0..5 dims (without the batch dim)");
        return NULL;
    }
    for (int i = 0; i < ndim; i++)
        if (sample_shape[i] <= 0) {
            dg_set_error("dg_infer_model_from_module: sample shape dim %d is %lld, must be positive", i,
                         (long long)sample_shape[i]);
            return NULL;
        }
    dg_ir ir = { 0 };
    int64_t shape[DG_MAX_DIMS] = { DG_IR_BATCH };
    for (int i = 0; i < ndim; i++) shape[1 + i] = sample_shape[i];
    from_module fm = { .ir = &ir };
    ir.input = dg__ir_value(&ir, "input", DG_IR_VALUE_INPUT, ndim + 1, shape);
    fm.cur = ir.input;
    dg_status s = ir.input < 0 ? DG_ERR : add_module(&fm, m, "");
    if (!s && fm.count == 0) {   /* an empty Sequential: the identity */
        dg_ir_node *nd = dg__ir_node(&ir, DG_IR_IDENTITY, "/Identity");
        int out = nd ? dg__ir_value(&ir, "output", DG_IR_VALUE_NODE, 0, NULL) : -1;
        if (out < 0) s = DG_ERR;
        else {
            ir.nodes[0].in[0] = ir.input;
            ir.nodes[0].nin = 1;
            ir.nodes[0].out = out;
            fm.cur = out;
        }
    }
    free(fm.scratch);
    if (s) {
        dg__ir_free(&ir);
        return NULL;
    }
    ir.output = fm.cur;
    char *oname = dup_str("output");
    if (!oname) {
        dg__ir_free(&ir);
        dg_set_error("dg_infer_model_from_module: out of memory");
        return NULL;
    }
    free(ir.values[ir.output].name);
    ir.values[ir.output].name = oname;
    return dg__infer_model_new(&ir, dg_module_name(m));
}

dg_infer_model *dg_infer_model_from_checkpoint(dg_ctx *ctx, dg_module *m, int ndim,
                                               const int64_t *sample_shape, const char *path) {
    if (!ctx || !m || !path) {
        dg_set_error("dg_infer_model_from_checkpoint: %s is NULL", !ctx ? "ctx" : !m ? "module" : "path");
        return NULL;
    }
    dg_train_state st = { 0 };
    st.num_buffers = dg_module_buffers(m, &st.buffers);
    if (dg_checkpoint_load_local(path, ctx, NULL, &st, NULL, 0)) return NULL;
    return dg_infer_model_from_module(m, ndim, sample_shape);
}

/* ---- worker contexts and runs ----------------------------------------------------- */

struct dg_infer_ctx {
    const dg_infer_model *m;
    dg_ctx *ctx;
    dg_tensor **vals;           /* per value: constants set once, the rest per run */
    int64_t max_batch;
};

void dg_infer_ctx_free(dg_infer_ctx *c) {
    if (!c) return;
    dg_ctx_free(c->ctx);
    free(c->vals);
    free(c);
}

dg_infer_ctx *dg_infer_ctx_new(const dg_infer_model *m, dg_device device, int64_t max_batch) {
    if (!m || max_batch < 1) {
        dg_set_error("dg_infer_ctx_new: %s", !m ? "model is NULL" : "max_batch must be at least 1");
        return NULL;
    }
    dg_infer_ctx *c = calloc(1, sizeof *c);
    if (c) c->vals = calloc((size_t)m->ir.nvalues, sizeof *c->vals);
    if (!c || !c->vals) {
        dg_infer_ctx_free(c);
        dg_set_error("dg_infer_ctx_new: out of memory");
        return NULL;
    }
    c->m = m;
    c->max_batch = max_batch;
    c->ctx = dg_ctx_new(device);
    if (!c->ctx) {
        dg_infer_ctx_free(c);
        return NULL;
    }
    dg_set_grad_enabled(c->ctx, false);
    for (int i = 0; i < m->ir.nvalues; i++) {
        const dg_ir_value *v = &m->ir.values[i];
        if (v->kind != DG_IR_VALUE_CONST) continue;
        float *data = m->ir.blob + v->offset;
        if (device == DG_CPU) {
            /* a view of the shared blob: ops never write their inputs */
            dg_tensor *t = dg__ctx_calloc(c->ctx, sizeof *t);
            dg__tensor_header_init(t, c->ctx, DG_F32, v->ndim, v->shape, data);
            t->param_index = -1;
            c->vals[i] = t;
        } else {
            dg_tensor *t = dg_tensor_persistent(c->ctx, DG_F32, v->ndim, v->shape);
            if (!t) {
                dg_infer_ctx_free(c);
                return NULL;
            }
            dg_tensor_copy_from_host(t, data);
            c->vals[i] = t;
        }
    }
    /* warm-up at max_batch: the arena then holds what such a run needs */
    size_t nin = (size_t)(max_batch * m->sample_in), nout = (size_t)(max_batch * m->sample_out);
    float *in = calloc(nin ? nin : 1, sizeof *in), *out = malloc((nout ? nout : 1) * sizeof *out);
    dg_status s = in && out ? dg_infer_run(c, in, max_batch, out)
                            : dg_set_error("dg_infer_ctx_new: out of memory for a batch of %lld", (long long)max_batch);
    free(in);
    free(out);
    if (s) {
        dg_infer_ctx_free(c);
        return NULL;
    }
    dg_ctx_reset_step(c->ctx);   /* merges the arena's chunks into one, now rather than in a request */
    return c;
}

static dg_tensor *run_node(dg_infer_ctx *c, const dg_ir_node *nd, int64_t batch) {
    dg_tensor **v = c->vals;
    dg_tensor *x = v[nd->in[0]];
    dg_tensor *b1 = nd->in[1] >= 0 ? v[nd->in[1]] : NULL, *b2 = nd->in[2] >= 0 ? v[nd->in[2]] : NULL;
    switch (nd->op) {
    case DG_IR_GEMM: return dg_linear(x, b1, b2);
    case DG_IR_MATMUL: return dg_matmul(x, b1);
    case DG_IR_ADD: return dg_add(x, b1);
    case DG_IR_CONV: return dg_conv2d(x, b1, b2, nd->stride, nd->pad, nd->dilation, nd->group);
    case DG_IR_BATCH_NORM:
        return dg_batch_norm2d(x, v[nd->in[3]], v[nd->in[4]], b1, b2, false, 0.1f, nd->eps);
    case DG_IR_MAX_POOL: return dg_max_pool2d(x, nd->kernel, nd->stride, nd->pad);
    case DG_IR_AVG_POOL: return dg_avg_pool2d(x, nd->kernel, nd->stride, nd->pad);
    case DG_IR_GLOBAL_AVG_POOL: {
        static const int dims[2] = { 2, 3 };
        return dg_mean_dims(x, 2, dims, true);
    }
    case DG_IR_RELU: return dg_relu(x);
    case DG_IR_FLATTEN: return dg_flatten(x, 1, -1);
    case DG_IR_RESHAPE: {
        int64_t shape[DG_MAX_DIMS];
        const dg_ir_value *y = &c->m->ir.values[nd->out];
        memcpy(shape, y->shape, sizeof shape);
        shape[0] = batch;
        return dg_reshape(x, y->ndim, shape);
    }
    case DG_IR_IDENTITY:
    case DG_IR_DROPOUT: return x;
    case DG_IR_SOFTMAX: return dg_softmax(x, nd->axis);
    case DG_IR_LOG_SOFTMAX: return dg_log_softmax(x, nd->axis);
    case DG_IR_OP_COUNT: break;
    }
    DG_ASSERT(!"bad op");
    return NULL;
}

dg_status dg_infer_run(dg_infer_ctx *c, const float *input, int64_t batch, float *output) {
    if (!c || !input || !output || batch < 1)
        return dg_set_error("dg_infer_run: %s", !c ? "context is NULL" : batch < 1 ? "batch must be at least 1"
                                                                       : "input or output is NULL");
    dg_clear_error();
    const dg_ir *ir = &c->m->ir;
    dg_ctx_reset_step(c->ctx);
    const dg_ir_value *iv = &ir->values[ir->input];
    int64_t shape[DG_MAX_DIMS];
    memcpy(shape, iv->shape, sizeof shape);
    shape[0] = batch;
    c->vals[ir->input] = dg_tensor_from(c->ctx, DG_F32, iv->ndim, shape, input);
    for (int i = 0; i < ir->nnodes; i++) {
        const dg_ir_node *nd = &ir->nodes[i];
        dg_tensor *y = run_node(c, nd, batch);
        if (!y) {   /* the op's message, prefixed with the node */
            char msg[768];
            snprintf(msg, sizeof msg, "%s", dg_last_error());
            dg_clear_error();
            return dg_set_error("%s: node '%s' (%s): %s", c->m->name, nd->name, dg__ir_op_name(nd->op), msg);
        }
        c->vals[nd->out] = y;
    }
    dg_tensor *out = dg_contiguous(c->vals[ir->output]);
    if (!out) return dg_set_error("%s: output copy failed", c->m->name);
    DG_ASSERT(dg_numel(out) == batch * c->m->sample_out);
    dg_tensor_to_host(out, output);
    return DG_OK;
}

uint64_t dg_infer_ctx_mallocs(const dg_infer_ctx *c) { return dg_ctx_arena_mallocs(c->ctx); }
