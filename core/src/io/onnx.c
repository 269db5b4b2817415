/* onnx.c - ONNX files to and from inference graphs (infer-impl.h), with
 * protobuf-c messages compiled from core/proto/onnx.proto. */
#include "dgrad/onnx.h"
#include "impl.h"
#include "infer-impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DG_ONNX_HAVE_PROTOBUF
#include "onnx.pb-c.h"

#include <unistd.h>

#define OPSET 13
#define IR_VERSION 7
#define MAX_FILE ((size_t)2 << 30)   /* protobuf's own limit */

/* ---- little-endian floats (ONNX's raw_data) --------------------------------- */

static void floats_to_le(uint8_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        for (int b = 0; b < 4; b++) dst[4 * i + (size_t)b] = (uint8_t)(u >> (8 * b));
    }
}

static void le_to_floats(float *dst, const uint8_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = 0;
        for (int b = 0; b < 4; b++) u |= (uint32_t)src[4 * i + (size_t)b] << (8 * b);
        memcpy(&dst[i], &u, 4);
    }
}

static int64_t le_to_i64(const uint8_t *src) {
    uint64_t u = 0;
    for (int b = 0; b < 8; b++) u |= (uint64_t)src[b] << (8 * b);
    return (int64_t)u;
}

/* ---- writing --------------------------------------------------------------- */

/* Every piece of the message tree, freed together after packing. */
typedef struct {
    void **p;
    size_t n, cap;
    bool oom;
} pool;

static void *palloc(pool *pl, size_t size) {
    if (pl->oom) return NULL;
    if (pl->n == pl->cap) {
        size_t nc = pl->cap ? pl->cap * 2 : 256;
        void **q = realloc(pl->p, nc * sizeof *q);
        if (!q) {
            pl->oom = true;
            return NULL;
        }
        pl->p = q;
        pl->cap = nc;
    }
    void *m = calloc(1, size ? size : 1);
    if (!m) {
        pl->oom = true;
        return NULL;
    }
    return pl->p[pl->n++] = m;
}

static void pool_free(pool *pl) {
    for (size_t i = 0; i < pl->n; i++) free(pl->p[i]);
    free(pl->p);
}

static char *pstr(pool *pl, const char *s) {
    char *d = palloc(pl, strlen(s) + 1);
    if (d) strcpy(d, s);
    return d;
}

static Onnx__AttributeProto *attr_new(pool *pl, const char *name) {
    Onnx__AttributeProto *a = palloc(pl, sizeof *a);
    if (!a) return NULL;
    onnx__attribute_proto__init(a);
    a->name = pstr(pl, name);
    a->has_type = 1;
    return a;
}

static Onnx__AttributeProto *attr_int(pool *pl, const char *name, int64_t v) {
    Onnx__AttributeProto *a = attr_new(pl, name);
    if (!a) return NULL;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    a->has_i = 1;
    a->i = v;
    return a;
}

static Onnx__AttributeProto *attr_float(pool *pl, const char *name, float v) {
    Onnx__AttributeProto *a = attr_new(pl, name);
    if (!a) return NULL;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    a->has_f = 1;
    a->f = v;
    return a;
}

static Onnx__AttributeProto *attr_ints(pool *pl, const char *name, int n, const int64_t *v) {
    Onnx__AttributeProto *a = attr_new(pl, name);
    int64_t *d = palloc(pl, (size_t)n * sizeof *d);
    if (!a || !d) return NULL;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    memcpy(d, v, (size_t)n * sizeof *d);
    a->n_ints = (size_t)n;
    a->ints = d;
    return a;
}

static Onnx__ValueInfoProto *value_info(pool *pl, const dg_ir_value *v) {
    Onnx__ValueInfoProto *vi = palloc(pl, sizeof *vi);
    Onnx__TypeProto *tp = palloc(pl, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = palloc(pl, sizeof *tt);
    Onnx__TensorShapeProto *sp = palloc(pl, sizeof *sp);
    Onnx__TensorShapeProto__Dimension **dims = palloc(pl, (size_t)v->ndim * sizeof *dims);
    if (!vi || !tp || !tt || !sp || !dims) return NULL;
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sp);
    for (int i = 0; i < v->ndim; i++) {
        Onnx__TensorShapeProto__Dimension *d = palloc(pl, sizeof *d);
        if (!d) return NULL;
        onnx__tensor_shape_proto__dimension__init(d);
        if (v->shape[i] == DG_IR_BATCH) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = pstr(pl, "batch");
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = v->shape[i];
        }
        dims[i] = d;
    }
    sp->n_dim = (size_t)v->ndim;
    sp->dim = dims;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sp;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->name = pstr(pl, v->name);
    vi->type = tp;
    return vi;
}

static Onnx__TensorProto *tensor_new(pool *pl, const char *name, int ndim, const int64_t *shape) {
    Onnx__TensorProto *t = palloc(pl, sizeof *t);
    int64_t *dims = palloc(pl, (size_t)ndim * sizeof *dims);
    if (!t || !dims) return NULL;
    onnx__tensor_proto__init(t);
    memcpy(dims, shape, (size_t)ndim * sizeof *dims);
    t->n_dims = (size_t)ndim;
    t->dims = dims;
    t->name = pstr(pl, name);
    t->has_data_type = 1;
    t->has_raw_data = 1;
    return t;
}

static Onnx__TensorProto *float_init(pool *pl, const dg_ir *ir, const dg_ir_value *v) {
    Onnx__TensorProto *t = tensor_new(pl, v->name, v->ndim, v->shape);
    size_t n = 1;
    for (int i = 0; i < v->ndim; i++) n *= (size_t)v->shape[i];
    uint8_t *raw = palloc(pl, n * 4);
    if (!t || !raw) return NULL;
    floats_to_le(raw, ir->blob + v->offset, n);
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    t->raw_data.len = n * 4;
    t->raw_data.data = raw;
    return t;
}

static Onnx__TensorProto *int64_init(pool *pl, const char *name, int n, const int64_t *vals) {
    int64_t len = n;
    Onnx__TensorProto *t = tensor_new(pl, name, 1, &len);
    uint8_t *raw = palloc(pl, (size_t)n * 8);
    if (!t || !raw) return NULL;
    for (int i = 0; i < n; i++)
        for (int b = 0; b < 8; b++) raw[8 * i + b] = (uint8_t)((uint64_t)vals[i] >> (8 * b));
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    t->raw_data.len = (size_t)n * 8;
    t->raw_data.data = raw;
    return t;
}

/* The attributes of nd into node (at most 6). */
static bool node_attrs(pool *pl, const dg_ir_node *nd, Onnx__NodeProto *node) {
    Onnx__AttributeProto **a = palloc(pl, 6 * sizeof *a);
    if (!a) return false;
    size_t n = 0;
    int64_t pads[4] = { nd->pad[0], nd->pad[1], nd->pad[0], nd->pad[1] };
    switch (nd->op) {
    case DG_IR_GEMM:
        a[n++] = attr_int(pl, "transB", 1);
        break;
    case DG_IR_CONV:
        a[n++] = attr_ints(pl, "kernel_shape", 2, nd->kernel);
        a[n++] = attr_ints(pl, "strides", 2, nd->stride);
        a[n++] = attr_ints(pl, "pads", 4, pads);
        a[n++] = attr_ints(pl, "dilations", 2, nd->dilation);
        a[n++] = attr_int(pl, "group", nd->group);
        break;
    case DG_IR_BATCH_NORM:
        a[n++] = attr_float(pl, "epsilon", nd->eps);
        a[n++] = attr_float(pl, "momentum", 1.0f - nd->momentum);   /* ONNX's is 1 - PyTorch's */
        break;
    case DG_IR_MAX_POOL:
    case DG_IR_AVG_POOL:
        a[n++] = attr_ints(pl, "kernel_shape", 2, nd->kernel);
        a[n++] = attr_ints(pl, "strides", 2, nd->stride);
        a[n++] = attr_ints(pl, "pads", 4, pads);
        if (nd->op == DG_IR_AVG_POOL) a[n++] = attr_int(pl, "count_include_pad", 1);
        break;
    case DG_IR_FLATTEN:
        a[n++] = attr_int(pl, "axis", 1);
        break;
    case DG_IR_SOFTMAX:
    case DG_IR_LOG_SOFTMAX:
        a[n++] = attr_int(pl, "axis", nd->axis);
        break;
    default:
        break;
    }
    for (size_t i = 0; i < n; i++)
        if (!a[i]) return false;
    node->n_attribute = n;
    node->attribute = a;
    return true;
}

/* Builds the model message in pl; NULL when out of memory. */
static Onnx__ModelProto *build_model(pool *pl, const dg_infer_model *m) {
    const dg_ir *ir = &m->ir;
    Onnx__ModelProto *mp = palloc(pl, sizeof *mp);
    Onnx__GraphProto *g = palloc(pl, sizeof *g);
    Onnx__OperatorSetIdProto *os = palloc(pl, sizeof *os);
    Onnx__OperatorSetIdProto **osl = palloc(pl, sizeof *osl);
    Onnx__NodeProto **nodes = palloc(pl, (size_t)ir->nnodes * sizeof *nodes);
    /* every constant, and one shape tensor per Reshape */
    Onnx__TensorProto **inits = palloc(pl, (size_t)(ir->nvalues + ir->nnodes) * sizeof *inits);
    Onnx__ValueInfoProto **gin = palloc(pl, sizeof *gin), **gout = palloc(pl, sizeof *gout);
    if (!mp || !g || !os || !osl || !nodes || !inits || !gin || !gout) return NULL;
    onnx__model_proto__init(mp);
    onnx__graph_proto__init(g);
    onnx__operator_set_id_proto__init(os);
    os->domain = pstr(pl, "");
    os->has_version = 1;
    os->version = OPSET;
    osl[0] = os;
    size_t ninit = 0;
    bool *used = palloc(pl, (size_t)ir->nvalues * sizeof *used);
    if (!used) return NULL;
    for (int i = 0; i < ir->nnodes; i++)
        for (int k = 0; k < ir->nodes[i].nin; k++)
            if (ir->nodes[i].in[k] >= 0) used[ir->nodes[i].in[k]] = true;
    for (int i = 0; i < ir->nvalues; i++)   /* the constants the nodes use */
        if (ir->values[i].kind == DG_IR_VALUE_CONST && used[i] &&
            !(inits[ninit++] = float_init(pl, ir, &ir->values[i])))
            return NULL;
    for (int i = 0; i < ir->nnodes; i++) {
        const dg_ir_node *nd = &ir->nodes[i];
        Onnx__NodeProto *node = palloc(pl, sizeof *node);
        char **ins = palloc(pl, 5 * sizeof *ins), **outs = palloc(pl, sizeof *outs);
        if (!node || !ins || !outs) return NULL;
        onnx__node_proto__init(node);
        size_t nin = 0;
        for (int k = 0; k < nd->nin; k++)
            if (nd->in[k] >= 0) ins[nin++] = ir->values[nd->in[k]].name;
        if (nd->op == DG_IR_RESHAPE) {
            char sname[200];
            snprintf(sname, sizeof sname, "%s_shape", nd->name);
            int64_t shape[DG_MAX_DIMS];
            memcpy(shape, nd->shape, sizeof shape);
            shape[0] = 0;   /* the batch: copied from the input */
            if (!(inits[ninit++] = int64_init(pl, sname, nd->ndim, shape))) return NULL;
            ins[nin++] = inits[ninit - 1]->name;
        }
        outs[0] = ir->values[nd->out].name;
        node->n_input = nin;
        node->input = ins;
        node->n_output = 1;
        node->output = outs;
        node->name = nd->name;
        node->op_type = (char *)dg__ir_op_name(nd->op);
        if (!node_attrs(pl, nd, node)) return NULL;
        nodes[i] = node;
    }
    if (!(gin[0] = value_info(pl, &ir->values[ir->input])) || !(gout[0] = value_info(pl, &ir->values[ir->output])))
        return NULL;
    g->name = pstr(pl, "dgrad");
    g->n_node = (size_t)ir->nnodes;
    g->node = nodes;
    g->n_initializer = ninit;
    g->initializer = inits;
    g->n_input = 1;
    g->input = gin;
    g->n_output = 1;
    g->output = gout;
    mp->has_ir_version = 1;
    mp->ir_version = IR_VERSION;
    mp->n_opset_import = 1;
    mp->opset_import = osl;
    mp->producer_name = pstr(pl, "dgrad");
    mp->producer_version = pstr(pl, dg_version());
    mp->doc_string = pstr(pl, m->name);
    mp->graph = g;
    return pl->oom ? NULL : mp;
}

/* Writes len bytes to path through a temporary file in the same directory
 * and a rename, so a reader never sees half a file. */
static dg_status write_atomic(const char *path, const void *data, size_t len) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return dg_set_error("%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return dg_set_error("%s: cannot create: %s", tmp, strerror(errno));
    bool ok = fwrite(data, 1, len, f) == len;
    ok = fflush(f) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path)) {
        int e = errno;
        remove(tmp);
        return dg_set_error("%s: cannot write: %s", path, strerror(e));
    }
    return DG_OK;
}

dg_status dg_onnx_save(const dg_infer_model *m, const char *path) {
    if (!m || !path) return dg_set_error("dg_onnx_save: %s is NULL", !m ? "model" : "path");
    pool pl = { 0 };
    Onnx__ModelProto *mp = build_model(&pl, m);
    if (!mp) {
        pool_free(&pl);
        return dg_set_error("%s: out of memory building the ONNX model", path);
    }
    size_t len = onnx__model_proto__get_packed_size(mp);
    uint8_t *buf = malloc(len ? len : 1);
    dg_status s;
    if (!buf) {
        s = dg_set_error("%s: out of memory for %zu bytes", path, len);
    } else {
        size_t got = onnx__model_proto__pack(mp, buf);
        DG_ASSERT(got == len);
        s = write_atomic(path, buf, len);
    }
    free(buf);
    pool_free(&pl);
    return s;
}

/* ---- reading --------------------------------------------------------------- */

/* int64 tensors (Reshape's shape, Pad's pads), by name */
typedef struct {
    char *name;
    int64_t n;
    int64_t *v;
} int_const;

typedef struct {
    const char *file;
    dg_ir ir;
    int_const *ints;
    int nints, ints_cap;
    int64_t opset;
} reader;

static void reader_free(reader *r) {
    for (int i = 0; i < r->nints; i++) {
        free(r->ints[i].name);
        free(r->ints[i].v);
    }
    free(r->ints);
    dg__ir_free(&r->ir);
}

static const int_const *find_int(const reader *r, const char *name) {
    for (int i = r->nints - 1; i >= 0; i--)
        if (!strcmp(r->ints[i].name, name)) return &r->ints[i];
    return NULL;
}

static const char *const supported =
    "Gemm, MatMul, Add, Conv, BatchNormalization, MaxPool, AveragePool, GlobalAveragePool, Relu, "
    "Flatten, Reshape, Pad, Identity, Dropout, Softmax, LogSoftmax, Constant";

static const char *dtype_name(int t) {
    static const char *const names[] = { "UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32",
                                         "INT64", "STRING", "BOOL", "FLOAT16", "DOUBLE", "UINT32", "UINT64" };
    return t >= 0 && t < (int)(sizeof names / sizeof names[0]) ? names[t] : "another type";
}

/* A tensor (initializer or Constant's value) named name into the graph:
 * float -> a constant, int64 -> the int table. */
static dg_status add_tensor(reader *r, const Onnx__TensorProto *t, const char *name) {
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
        return dg_set_error("%s: tensor '%s' keeps its data in an external file, which dgrad does not read",
                            r->file, name);
    if (t->n_dims > DG_MAX_DIMS)
        return dg_set_error("%s: tensor '%s' has %zu dims, dgrad takes at most %d", r->file, name, t->n_dims,
                            DG_MAX_DIMS);
    int64_t n = 1;
    for (size_t i = 0; i < t->n_dims; i++) {
        if (t->dims[i] < 0 || (t->dims[i] > 0 && n > INT64_MAX / 8 / t->dims[i]))
            return dg_set_error("%s: tensor '%s' has a bad dim %lld", r->file, name, (long long)t->dims[i]);
        n *= t->dims[i];
    }
    int dt = t->has_data_type ? t->data_type : 0;
    if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
        if (t->has_raw_data ? t->raw_data.len != (size_t)n * 4 : t->n_float_data != (size_t)n)
            return dg_set_error("%s: tensor '%s' holds %zu values, its dims say %lld", r->file, name,
                                t->has_raw_data ? t->raw_data.len / 4 : t->n_float_data, (long long)n);
        int id = dg__ir_const(&r->ir, name, (int)t->n_dims, t->dims, t->has_raw_data ? NULL : t->float_data);
        if (id < 0) return DG_ERR;
        if (t->has_raw_data) le_to_floats(r->ir.blob + r->ir.values[id].offset, t->raw_data.data, (size_t)n);
        return DG_OK;
    }
    bool is_bool = dt == ONNX__TENSOR_PROTO__DATA_TYPE__BOOL;
    if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT64 || is_bool) {
        size_t es = is_bool ? 1 : 8, have = is_bool ? t->n_int32_data : t->n_int64_data;
        if (t->has_raw_data ? t->raw_data.len != (size_t)n * es : have != (size_t)n)
            return dg_set_error("%s: tensor '%s' holds the wrong number of values for its dims", r->file, name);
        if (r->nints == r->ints_cap) {
            int nc = r->ints_cap ? r->ints_cap * 2 : 8;
            int_const *p = realloc(r->ints, (size_t)nc * sizeof *p);
            if (!p) return dg_set_error("%s: out of memory", r->file);
            r->ints = p;
            r->ints_cap = nc;
        }
        int_const *ic = &r->ints[r->nints];
        ic->n = n;
        ic->v = malloc((size_t)(n ? n : 1) * sizeof *ic->v);
        ic->name = malloc(strlen(name) + 1);
        if (!ic->v || !ic->name) {
            free(ic->v);
            free(ic->name);
            return dg_set_error("%s: out of memory", r->file);
        }
        strcpy(ic->name, name);
        for (int64_t i = 0; i < n; i++) {
            if (is_bool) ic->v[i] = t->has_raw_data ? t->raw_data.data[i] != 0 : t->int32_data[i] != 0;
            else ic->v[i] = t->has_raw_data ? le_to_i64(t->raw_data.data + 8 * i) : t->int64_data[i];
        }
        r->nints++;
        return DG_OK;
    }
    return dg_set_error("%s: tensor '%s' has data type %s; dgrad reads FLOAT, INT64 and BOOL tensors", r->file, name,
                        dtype_name(dt));
}

static const Onnx__AttributeProto *find_attr(const Onnx__NodeProto *n, const char *name) {
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name)) return n->attribute[i];
    return NULL;
}

static int64_t attr_i(const Onnx__NodeProto *n, const char *name, int64_t def) {
    const Onnx__AttributeProto *a = find_attr(n, name);
    return a && a->has_i ? a->i : def;
}

static float attr_f(const Onnx__NodeProto *n, const char *name, float def) {
    const Onnx__AttributeProto *a = find_attr(n, name);
    return a && a->has_f ? a->f : def;
}

static const char *attr_s(const Onnx__NodeProto *n, const char *name, char *buf, size_t len) {
    const Onnx__AttributeProto *a = find_attr(n, name);
    if (!a || !a->has_s) return NULL;
    size_t k = a->s.len < len - 1 ? a->s.len : len - 1;
    memcpy(buf, a->s.data, k);
    buf[k] = '\0';
    return buf;
}

/* A 2-entry attribute ({h, w}) with a default; false (message) for another count. */
static bool attr_hw(const reader *r, const Onnx__NodeProto *n, const char *name, int64_t def, int64_t out[2]) {
    const Onnx__AttributeProto *a = find_attr(n, name);
    out[0] = out[1] = def;
    if (!a) return true;
    if (a->n_ints != 2) {
        dg_set_error("%s: node '%s' (%s): attribute %s has %zu values; dgrad supports 2-D (NCHW) only", r->file,
                     n->name, n->op_type, name, a->n_ints);
        return false;
    }
    out[0] = a->ints[0];
    out[1] = a->ints[1];
    return true;
}

/* pads [h_begin, w_begin, h_end, w_end] as {h, w}; they must be symmetric. */
static bool attr_pads(const reader *r, const Onnx__NodeProto *n, int64_t out[2]) {
    const Onnx__AttributeProto *a = find_attr(n, "pads");
    char buf[32];
    const char *ap = attr_s(n, "auto_pad", buf, sizeof buf);
    out[0] = out[1] = 0;
    if (ap && strcmp(ap, "NOTSET") && strcmp(ap, "VALID")) {
        dg_set_error("%s: node '%s' (%s): auto_pad %s is not supported (give pads)", r->file, n->name, n->op_type, ap);
        return false;
    }
    if (!a) return true;
    if (a->n_ints != 4 || a->ints[0] != a->ints[2] || a->ints[1] != a->ints[3]) {
        dg_set_error("%s: node '%s' (%s): pads must be 4 symmetric values (top, left, bottom, right), "
                     "as dgrad pads both sides alike", r->file, n->name, n->op_type);
        return false;
    }
    out[0] = a->ints[0];
    out[1] = a->ints[1];
    return true;
}

/* Value id of a node's input i: -1 if absent (or empty); -2 (message) if unknown. */
static int input_id(const reader *r, const Onnx__NodeProto *n, size_t i) {
    if (i >= n->n_input || !n->input[i][0]) return -1;
    int id = dg__ir_find(&r->ir, n->input[i]);
    if (id < 0 && !find_int(r, n->input[i])) {
        dg_set_error("%s: node '%s' (%s): input '%s' is not the graph input, an initializer or an earlier "
                     "node's output", r->file, n->name, n->op_type, n->input[i]);
        return -2;
    }
    return id;
}

/* A new constant, a copy of value id with its floats run through fn. */
static int derived_const(reader *r, int id, const char *suffix, int ndim, const int64_t *shape) {
    char name[512];
    snprintf(name, sizeof name, "%s%s", r->ir.values[id].name, suffix);
    return dg__ir_const(&r->ir, name, ndim, shape, NULL);
}

/* Gemm: weight to [out, in] (transposed when transB is 0), alpha into it,
 * beta into the bias (made 1-D). */
static dg_status gemm_node(reader *r, const Onnx__NodeProto *n, dg_ir_node *nd) {
    float alpha = attr_f(n, "alpha", 1.0f), beta = attr_f(n, "beta", 1.0f);
    int64_t ta = attr_i(n, "transA", 0), tb = attr_i(n, "transB", 0);
    if (ta) return dg_set_error("%s: node '%s' (Gemm): transA=1 is not supported", r->file, n->name);
    int w = nd->in[1];
    if (w < 0 || r->ir.values[w].kind != DG_IR_VALUE_CONST || r->ir.values[w].ndim != 2)
        return dg_set_error("%s: node '%s' (Gemm): B must be a 2-D float initializer", r->file, n->name);
    if (!tb || alpha != 1.0f) {
        int64_t k = r->ir.values[w].shape[0], m = r->ir.values[w].shape[1];
        int64_t shape[2] = { tb ? k : m, tb ? m : k };
        int id = derived_const(r, w, tb ? "_scaled" : "_T", 2, shape);
        if (id < 0) return DG_ERR;
        const float *src = r->ir.blob + r->ir.values[w].offset;
        float *dst = r->ir.blob + r->ir.values[id].offset;
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < m; j++) {
                if (tb) dst[i * m + j] = alpha * src[i * m + j];
                else dst[j * k + i] = alpha * src[i * m + j];
            }
        nd->in[1] = id;
    }
    int c = nd->in[2];
    if (c >= 0) {
        const dg_ir_value *cv = &r->ir.values[c];
        int64_t nout = r->ir.values[nd->in[1]].shape[0], numel = 1;
        for (int i = 0; i < cv->ndim; i++) numel *= cv->shape[i];
        if (cv->kind != DG_IR_VALUE_CONST || numel != nout || (cv->ndim == 2 && cv->shape[0] != 1) || cv->ndim > 2)
            return dg_set_error("%s: node '%s' (Gemm): C must be a float initializer of shape [N] or [1, N] "
                                "(N = %lld)", r->file, n->name, (long long)nout);
        if (beta != 1.0f || cv->ndim != 1) {
            int id = derived_const(r, c, "_bias", 1, &nout);
            if (id < 0) return DG_ERR;
            const float *src = r->ir.blob + r->ir.values[c].offset;
            float *dst = r->ir.blob + r->ir.values[id].offset;
            for (int64_t i = 0; i < nout; i++) dst[i] = beta * src[i];
            nd->in[2] = id;
        }
    }
    return DG_OK;
}

/* One node into the graph. */
static dg_status add_node(reader *r, const Onnx__NodeProto *n) {
    const char *op = n->op_type ? n->op_type : "";
    const char *name = n->name && n->name[0] ? n->name : (n->n_output ? n->output[0] : "?");
    if (n->domain && n->domain[0] && strcmp(n->domain, "ai.onnx"))
        return dg_set_error("%s: node '%s' has op '%s' of domain '%s'; dgrad imports only the default ONNX domain",
                            r->file, name, op, n->domain);
    if (n->n_output < 1 || !n->output[0][0])
        return dg_set_error("%s: node '%s' (%s) has no output", r->file, name, op);
    for (size_t i = 1; i < n->n_output; i++)
        if (n->output[i][0])
            return dg_set_error("%s: node '%s' (%s): output %zu ('%s') is not supported (inference ops have one output)",
                                r->file, name, op, i, n->output[i]);
    Onnx__NodeProto nn = *n;   /* the name used in messages */
    nn.name = (char *)name;
    n = &nn;
    if (!strcmp(op, "Constant")) {
        const Onnx__AttributeProto *v = find_attr(n, "value"), *vi = find_attr(n, "value_ints");
        if (v && v->t) return add_tensor(r, v->t, n->output[0]);
        if (vi) {
            Onnx__TensorProto t = ONNX__TENSOR_PROTO__INIT;
            int64_t len = (int64_t)vi->n_ints;
            t.n_dims = 1;
            t.dims = &len;
            t.has_data_type = 1;
            t.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
            t.n_int64_data = vi->n_ints;
            t.int64_data = vi->ints;
            return add_tensor(r, &t, n->output[0]);
        }
        return dg_set_error("%s: node '%s' (Constant): only a 'value' tensor or 'value_ints' is supported", r->file, name);
    }
    static const struct { const char *name; dg_ir_op op; } table[] = {
        { "Gemm", DG_IR_GEMM }, { "MatMul", DG_IR_MATMUL }, { "Add", DG_IR_ADD }, { "Conv", DG_IR_CONV },
        { "BatchNormalization", DG_IR_BATCH_NORM }, { "MaxPool", DG_IR_MAX_POOL },
        { "AveragePool", DG_IR_AVG_POOL }, { "GlobalAveragePool", DG_IR_GLOBAL_AVG_POOL },
        { "Relu", DG_IR_RELU }, { "Flatten", DG_IR_FLATTEN }, { "Reshape", DG_IR_RESHAPE },
        { "Pad", DG_IR_IDENTITY }, { "Identity", DG_IR_IDENTITY }, { "Dropout", DG_IR_DROPOUT },
        { "Softmax", DG_IR_SOFTMAX }, { "LogSoftmax", DG_IR_LOG_SOFTMAX },
    };
    int k = -1;
    for (int i = 0; i < (int)(sizeof table / sizeof table[0]); i++)
        if (!strcmp(op, table[i].name)) k = i;
    if (k < 0)
        return dg_set_error("%s: node '%s' has op '%s', which dgrad cannot import (supported: %s)", r->file, name,
                            op, supported);
    int ins[5] = { -1, -1, -1, -1, -1 };
    size_t nin = n->n_input < 5 ? n->n_input : 5;
    for (size_t i = 0; i < nin; i++)
        if ((ins[i] = input_id(r, n, i)) == -2) return DG_ERR;
    if (n->n_input > 5 || ins[0] < 0)
        return dg_set_error("%s: node '%s' (%s): %s", r->file, name, op,
                            ins[0] < 0 ? "its first input must be a float tensor" : "too many inputs");
    dg_ir_node *nd = dg__ir_node(&r->ir, table[k].op, name);
    if (!nd) return DG_ERR;
    memcpy(nd->in, ins, sizeof ins);
    nd->nin = (int)nin;
    dg_status s = DG_OK;
    switch (nd->op) {
    case DG_IR_GEMM:
        s = gemm_node(r, n, nd);
        break;
    case DG_IR_ADD:
        if (nin == 2 && ins[1] >= 0 && r->ir.values[ins[0]].kind == DG_IR_VALUE_CONST &&
            r->ir.values[ins[1]].kind != DG_IR_VALUE_CONST) {
            nd->in[0] = ins[1];
            nd->in[1] = ins[0];
        }
        break;
    case DG_IR_CONV: {
        int64_t ks[2];
        if (!attr_hw(r, n, "kernel_shape", 0, ks) || !attr_hw(r, n, "strides", 1, nd->stride) ||
            !attr_hw(r, n, "dilations", 1, nd->dilation) || !attr_pads(r, n, nd->pad))
            return DG_ERR;
        nd->group = attr_i(n, "group", 1);
        if (nd->in[1] >= 0 && ks[0] && (r->ir.values[nd->in[1]].ndim != 4 || ks[0] != r->ir.values[nd->in[1]].shape[2] ||
                                        ks[1] != r->ir.values[nd->in[1]].shape[3]))
            return dg_set_error("%s: node '%s' (Conv): kernel_shape does not match the weight", r->file, name);
        break;
    }
    case DG_IR_BATCH_NORM:
        if (attr_i(n, "training_mode", 0))
            return dg_set_error("%s: node '%s' (BatchNormalization): training_mode=1 is not supported", r->file, name);
        nd->eps = attr_f(n, "epsilon", 1e-5f);
        nd->momentum = 1.0f - attr_f(n, "momentum", 0.9f);
        break;
    case DG_IR_MAX_POOL:
    case DG_IR_AVG_POOL: {
        int64_t dil[2];
        if (!attr_hw(r, n, "kernel_shape", 0, nd->kernel) || !attr_hw(r, n, "strides", 1, nd->stride) ||
            !attr_hw(r, n, "dilations", 1, dil) || !attr_pads(r, n, nd->pad))
            return DG_ERR;
        if (!find_attr(n, "kernel_shape"))
            return dg_set_error("%s: node '%s' (%s): kernel_shape is missing", r->file, name, op);
        if (attr_i(n, "ceil_mode", 0) || dil[0] != 1 || dil[1] != 1 || attr_i(n, "storage_order", 0))
            return dg_set_error("%s: node '%s' (%s): ceil_mode, dilations and storage_order other than the "
                                "defaults are not supported", r->file, name, op);
        if (nd->op == DG_IR_AVG_POOL && (nd->pad[0] || nd->pad[1]) && !attr_i(n, "count_include_pad", 0))
            return dg_set_error("%s: node '%s' (AveragePool): padding with count_include_pad=0 is not supported "
                                "(dgrad counts the padding, as PyTorch's default)", r->file, name);
        break;
    }
    case DG_IR_FLATTEN:
        nd->axis = (int)attr_i(n, "axis", 1);
        break;
    case DG_IR_SOFTMAX:
    case DG_IR_LOG_SOFTMAX:
        nd->axis = (int)attr_i(n, "axis", r->opset >= 13 ? -1 : 1);
        break;
    case DG_IR_RESHAPE: {
        const int_const *sh = nin >= 2 ? find_int(r, n->input[1]) : NULL;
        if (!sh || sh->n < 1 || sh->n > DG_MAX_DIMS || attr_i(n, "allowzero", 0))
            return dg_set_error("%s: node '%s' (Reshape): the shape must be a constant int64 tensor of 1..%d "
                                "entries (allowzero=0); shapes computed at run time are not supported",
                                r->file, name, DG_MAX_DIMS);
        nd->ndim = (int)sh->n;
        memcpy(nd->shape, sh->v, (size_t)sh->n * sizeof *sh->v);
        nd->nin = 1;
        break;
    }
    case DG_IR_IDENTITY:
        if (!strcmp(op, "Pad")) {   /* torch writes a zero Pad before AveragePool */
            const Onnx__AttributeProto *pa = find_attr(n, "pads");
            const int_const *pc = nin >= 2 ? find_int(r, n->input[1]) : NULL;
            bool zero = pa || pc;
            for (size_t i = 0; pa && i < pa->n_ints; i++) zero = zero && pa->ints[i] == 0;
            for (int64_t i = 0; pc && i < pc->n; i++) zero = zero && pc->v[i] == 0;
            if (!zero)
                return dg_set_error("%s: node '%s' (Pad): only constant pads of zero are supported", r->file, name);
        }
        nd->nin = 1;
        break;
    case DG_IR_DROPOUT: {
        if (nin >= 3 && n->input[2][0]) {
            const int_const *tm = find_int(r, n->input[2]);
            if (!tm || (tm->n && tm->v[0]))
                return dg_set_error("%s: node '%s' (Dropout): training_mode must be a constant false", r->file, name);
        }
        nd->ratio = 0.5f;
        if (nin >= 2 && ins[1] >= 0 && r->ir.values[ins[1]].kind == DG_IR_VALUE_CONST)
            nd->ratio = r->ir.blob[r->ir.values[ins[1]].offset];
        else nd->ratio = attr_f(n, "ratio", 0.5f);
        nd->nin = 1;
        break;
    }
    default:
        break;
    }
    if (s) return DG_ERR;
    nd = &r->ir.nodes[r->ir.nnodes - 1];
    int out = dg__ir_value(&r->ir, n->output[0], DG_IR_VALUE_NODE, 0, NULL);
    if (out < 0) return DG_ERR;
    nd->out = out;
    return DG_OK;
}

static dg_status read_graph(reader *r, const Onnx__ModelProto *mp) {
    const Onnx__GraphProto *g = mp->graph;
    if (!g) return dg_set_error("%s: the model has no graph", r->file);
    r->opset = -1;
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
        if (!o->domain || !o->domain[0] || !strcmp(o->domain, "ai.onnx")) r->opset = o->version;
    }
    if (r->opset < 0) return dg_set_error("%s: the model imports no opset of the default ONNX domain", r->file);
    if (r->opset < 9)
        return dg_set_error("%s: opset %lld is older than dgrad reads (9 and later)", r->file, (long long)r->opset);
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *t = g->initializer[i];
        if (!t->name || !t->name[0]) return dg_set_error("%s: initializer %zu has no name", r->file, i);
        if (add_tensor(r, t, t->name)) return DG_ERR;
    }
    /* the graph input: the one that is not an initializer */
    const Onnx__ValueInfoProto *in = NULL;
    const char *in_name = "";
    for (size_t i = 0; i < g->n_input; i++) {
        const char *nm = g->input[i]->name ? g->input[i]->name : "";
        if (dg__ir_find(&r->ir, nm) >= 0 || find_int(r, nm)) continue;
        if (in) return dg_set_error("%s: the graph has inputs '%s' and '%s'; dgrad runs models of one input",
                                    r->file, in_name, nm);
        in = g->input[i];
        in_name = nm;
    }
    if (!in || !in_name[0]) return dg_set_error("%s: the graph has no (named) input", r->file);
    const Onnx__TypeProto *tp = in->type;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type->has_elem_type ||
        tp->tensor_type->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return dg_set_error("%s: the input '%s' must be a FLOAT tensor", r->file, in_name);
    const Onnx__TensorShapeProto *sp = tp->tensor_type->shape;
    if (!sp || sp->n_dim < 1 || sp->n_dim > DG_MAX_DIMS)
        return dg_set_error("%s: the input '%s' must have a shape of 1..%d dims", r->file, in_name, DG_MAX_DIMS);
    int64_t shape[DG_MAX_DIMS];
    for (size_t i = 0; i < sp->n_dim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = sp->dim[i];
        bool fixed = d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && d->dim_value > 0;
        if (i == 0) shape[0] = DG_IR_BATCH;   /* symbolic or fixed: the batch */
        else if (!fixed)
            return dg_set_error("%s: the input '%s' has a symbolic or unknown dim %zu; only the batch (dim 0) may be",
                                r->file, in_name, i);
        else shape[i] = d->dim_value;
    }
    r->ir.input = dg__ir_value(&r->ir, in_name, DG_IR_VALUE_INPUT, (int)sp->n_dim, shape);
    if (r->ir.input < 0) return DG_ERR;
    for (size_t i = 0; i < g->n_node; i++)
        if (add_node(r, g->node[i])) return DG_ERR;
    if (g->n_output != 1)
        return dg_set_error("%s: the graph has %zu outputs; dgrad runs models of one output", r->file, g->n_output);
    const char *on = g->output[0]->name ? g->output[0]->name : "";
    r->ir.output = dg__ir_find(&r->ir, on);
    if (r->ir.output < 0) return dg_set_error("%s: the graph output '%s' is made by no node", r->file, on);
    if (r->ir.output == r->ir.input) return dg_set_error("%s: the graph output is its input", r->file);
    return DG_OK;
}

dg_infer_model *dg_onnx_load_buffer(const void *data, size_t len, const char *name) {
    if (!data || !name) {
        dg_set_error("dg_onnx_load_buffer: %s is NULL", !data ? "data" : "name");
        return NULL;
    }
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, data);
    if (!mp) {
        dg_set_error("%s: not an ONNX model (the protobuf does not parse)", name);
        return NULL;
    }
    reader r = { .file = name };
    dg_status s = read_graph(&r, mp);
    onnx__model_proto__free_unpacked(mp, NULL);
    dg_infer_model *m = NULL;
    if (!s) m = dg__infer_model_new(&r.ir, name);
    reader_free(&r);
    return m;
}

dg_infer_model *dg_onnx_load(const char *path) {
    if (!path) {
        dg_set_error("dg_onnx_load: path is NULL");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        dg_set_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            size_t nc = cap ? cap * 2 : (size_t)1 << 16;
            uint8_t *p = nc <= MAX_FILE ? realloc(buf, nc) : NULL;
            if (!p) {
                free(buf);
                fclose(f);
                dg_set_error("%s: %s", path, nc > MAX_FILE ? "larger than 2 GiB" : "out of memory");
                return NULL;
            }
            buf = p;
            cap = nc;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        dg_set_error("%s: read error", path);
        return NULL;
    }
    dg_infer_model *m = dg_onnx_load_buffer(buf, len, path);
    free(buf);
    return m;
}

#else /* !DG_ONNX_HAVE_PROTOBUF */

dg_status dg_onnx_save(const dg_infer_model *m, const char *path) {
    (void)m;
    return dg_set_error("%s: dgrad was built without protobuf-c, which ONNX files need", path ? path : "onnx");
}

dg_infer_model *dg_onnx_load_buffer(const void *data, size_t len, const char *name) {
    (void)data;
    (void)len;
    dg_set_error("%s: dgrad was built without protobuf-c, which ONNX files need", name ? name : "onnx");
    return NULL;
}

dg_infer_model *dg_onnx_load(const char *path) { return dg_onnx_load_buffer(NULL, 0, path); }

#endif

dg_status dg_onnx_export(dg_module *m, int ndim, const int64_t *sample_shape, const char *path) {
    dg_infer_model *im = dg_infer_model_from_module(m, ndim, sample_shape);
    if (!im) return DG_ERR;
    dg_status s = dg_onnx_save(im, path);
    dg_infer_model_free(im);
    return s;
}
