/* dgrad/onnx.h - ONNX model files (https://onnx.ai), written and read with
 * protobuf-c (core/proto/onnx.proto: the official schema's field numbers).
 *
 * Writing: opset 13, IR version 7, one float input "input" [batch,
 * sample...] with a dynamic batch dim ("batch") and one output "output";
 * weights as raw little-endian float initializers named as PyTorch's
 * state_dict ("0.weight", "1.running_mean"). Modules map to Gemm
 * (transB=1), Conv, BatchNormalization (inference: running statistics),
 * MaxPool, AveragePool (count_include_pad=1, PyTorch's default), Relu,
 * Flatten (axis 1) and Dropout (inference, the identity).
 *
 * Reading takes the files dgrad writes and those torch.onnx.export writes
 * for such models: the ops above and Identity, Dropout, MatMul, Add (with
 * a constant), Reshape (constant shape, batch kept in dim 0), Pad (all
 * pads zero), GlobalAveragePool, Softmax, LogSoftmax, Constant, with
 * float initializers (raw or float_data) and int64 ones for shapes. It
 * supports one float input whose dim 0 is the batch and one output. An op
 * outside that set is a one-line error naming it and its node: "x.onnx:
 * node '/2/Tanh' has op 'Tanh', which dgrad cannot import (supported:
 * ...)". Other errors name the file and the node or tensor too.
 *
 * Without protobuf-c in the build, these functions fail with "built
 * without protobuf-c".
 */
#ifndef DGRAD_ONNX_H
#define DGRAD_ONNX_H

#include "dgrad/infer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes module m (as dg_infer_model_from_module takes it, eval mode) for
 * inputs [batch, sample_shape...] to path. DG_ERR and a message naming
 * the module or the file. */
dg_status dg_onnx_export(dg_module *m, int ndim, const int64_t *sample_shape, const char *path);

/* Writes a model (from a module or an ONNX file) to path. */
dg_status dg_onnx_save(const dg_infer_model *m, const char *path);

/* Reads an ONNX file into a model (see above); NULL and a message. */
dg_infer_model *dg_onnx_load(const char *path);
/* The same from bytes in memory; name is used in messages. */
dg_infer_model *dg_onnx_load_buffer(const void *data, size_t len, const char *name);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_ONNX_H */
