#!/bin/sh
# test_cuda_env.sh MNIST_MLP DATA_DIR - bad CUDA settings in the environment
# are named in one line with exit 1, with or without a GPU (the CUDA
# backend checks them before it asks for a device).
mlp=$1 data=$2
fail=0
check() {   # VAR VALUE
    out=$(env "$1=$2" "$mlp" --device cuda --data "$data" --epochs 1 2>&1 >/dev/null); rc=$?
    echo "$1=$2: rc=$rc: $out"
    if [ "$rc" != 1 ] || [ "$(printf '%s\n' "$out" | wc -l)" != 1 ]; then
        echo "FAIL: expected exit 1 and one line"; fail=1
    fi
    case "$out" in *"$1='$2'"*) ;; *) echo "FAIL: the message does not name $1='$2'"; fail=1 ;; esac
}
check DG_DEVICE abc
check DG_DEVICE -1
check DG_DEVICE 1x
check DG_CUDA_CHECK_LABELS yes
check DG_CUDA_CHECK_LABELS 2
exit $fail
