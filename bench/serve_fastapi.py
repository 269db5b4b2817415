#!/usr/bin/env python3
"""serve_fastapi - the anchor for bench/serve_bench.sh: onnxruntime behind
FastAPI/uvicorn (one worker process, ORT with one thread), the KServe v2
infer endpoint of dgserve: POST /v2/models/NAME/infer
{"inputs": [{"name", "shape": [n, ...], "datatype": "FP32", "data": [...]}]}
-> {"model_name", "model_version", "outputs": [{"name", "datatype", "shape", "data"}]}.

    serve_fastapi.py MODEL.onnx PORT [NAME]
"""
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

model, port = sys.argv[1], int(sys.argv[2])
name = sys.argv[3] if len(sys.argv) > 3 else "mnist"
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
sample = [d for d in inp.shape[1:]]
app = FastAPI()


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


@app.post("/v2/models/%s/infer" % name)
async def infer(req: Request):
    body = await req.json()
    t = body["inputs"][0]
    shape = t["shape"]
    if t.get("datatype") != "FP32" or list(shape[1:]) != sample:
        return JSONResponse({"error": "inputs[0]: want FP32 of shape [-1, %s]" % sample}, status_code=400)
    x = np.asarray(t["data"], dtype=np.float32).reshape(shape)
    y = sess.run(None, {inp.name: x})[0]
    return {"model_name": name, "model_version": "1",
            "outputs": [{"name": "output", "datatype": "FP32", "shape": list(y.shape),
                         "data": y.ravel().tolist()}]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)
