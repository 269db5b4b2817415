#!/usr/bin/env bash
# device_check.sh - build dgrad's CUDA backend on a GPU machine and check it:
# test_cuda (every op and MLP training against the CPU backend), test_nccl
# (the nccl communicator on device buffers, DDP through NCCL and through
# pinned host memory), test_cuda_graph (whole-step CUDA graphs against eager
# training, the pinned loader), test_cnn_cuda (the CNN ops against the
# CPU), mnist_mlp --device cuda for 3 epochs three
# ways (DDP with NCCL, --cuda-graph, DDP staged through the host: the same
# params_hash expected), mnist_cnn --device cuda for an epoch beside
# PyTorch's same CNN there, a benchmark of the MLP training step (batch 64):
# dgrad on CUDA (eager and CUDA graph) against PyTorch eager and PyTorch
# with a CUDA graph, then, time permitting, compute-sanitizer and the CPU
# run. Ends with markdown tables. Meant to finish in about 5 minutes
# (DG_CHECK_BUDGET seconds).
#
#   scripts/device_check.sh
#
# Environment:
#   DG_MNIST_DIR     MNIST IDX files (.gz or plain); without it mnist_mlp is
#                    skipped and test_cuda trains on synthetic data
#   DG_DEPS_PREFIX   optional: the prefix from scripts/fetch_device_debs.sh
#                    (OpenBLAS, zlib headers, pkgconf), used for what the
#                    machine lacks
#   DG_BUILD_DIR     build directory, default build-device
#   DG_JOBS          parallel build jobs, default: all cores
#   NCCL_ROOT        optional: NCCL's prefix (include/nccl.h, lib/libnccl*);
#                    default: the CUDA toolkit's, else PyTorch's nvidia-nccl
#   DG_CHECK_BUDGET  seconds for the whole script, default 300; optional
#                    stages are skipped when too little is left
#   DG_FORCE_MANUAL=1  build with gcc/nvcc directly instead of CMake (also
#                    the fallback when CMake is missing, too old or fails)
#
# Exit status: 0 when the build, test_cuda, test_nccl, test_cuda_graph and
# the mnist_mlp CUDA runs succeeded (and agreed).
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
T0=$(date +%s)
BUDGET=${DG_CHECK_BUDGET:-300}
B=${DG_BUILD_DIR:-build-device}
case "$B" in /*) ;; *) B=$ROOT/$B ;; esac
JOBS=${DG_JOBS:-$(nproc 2>/dev/null || echo 8)}
MNIST=${DG_MNIST_DIR:-}
[ -n "$MNIST" ] && case "$MNIST" in /*) ;; *) MNIST=$ROOT/$MNIST ;; esac
mkdir -p "$B"
LOG=$B/device_check.log
: > "$LOG"

elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
section() { echo; echo "=== [$(elapsed)s] $*"; }
ROWS=()      # "check|status|detail"
row() { ROWS+=("$1|$2|$3"); }
# run_to SECONDS CMD...: the command under a timeout, output teed into $LOG
run_to() {
    local t=$1; shift
    if command -v timeout >/dev/null; then timeout -k 10 "$t" "$@"; else "$@"; fi
}

# ---- versions ----------------------------------------------------------------
section "machine"
uname -a
grep -m1 "model name" /proc/cpuinfo 2>/dev/null
echo "cores: $(nproc 2>/dev/null)"
[ "$(uname -m)" = x86_64 ] || echo "WARNING: not x86-64: DG_DEPS_PREFIX (Debian amd64 packages) will not work"
nvidia-smi 2>&1 | head -20 || echo "nvidia-smi: not available"
NVCC=""
for c in "${CUDACXX:-}" "$(command -v nvcc 2>/dev/null)" "${CUDA_HOME:-/nonexistent}/bin/nvcc" \
         /usr/local/cuda/bin/nvcc; do
    [ -n "$c" ] && [ -x "$c" ] && { NVCC=$c; break; }
done
if [ -z "$NVCC" ]; then
    NVCC=$(ls -d /usr/local/cuda-*/bin/nvcc 2>/dev/null | sort -V | tail -1)
fi
echo "nvcc: ${NVCC:-not found}"; [ -n "$NVCC" ] && "$NVCC" --version | tail -2
CUDA_ROOT=$( [ -n "$NVCC" ] && cd "$(dirname "$NVCC")/.." && pwd )
command -v cmake >/dev/null && cmake --version | head -1 || echo "cmake: not found"
CC=${CC:-$(command -v cc || command -v gcc || echo cc)}
"$CC" --version 2>&1 | head -1
PY=$(command -v python3 || command -v python || true)
[ -n "$PY" ] && "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" 2>&1 | tail -1
echo "MNIST: ${MNIST:-not set}"
# NCCL: the toolkit's, NCCL_ROOT, or the nvidia-nccl wheel PyTorch brings
NCCL_DIR=${NCCL_ROOT:-}
if [ -z "$NCCL_DIR" ] && [ -n "$CUDA_ROOT" ]; then
    for d in "$CUDA_ROOT" "$CUDA_ROOT/targets/x86_64-linux" /usr; do
        [ -f "$d/include/nccl.h" ] && { NCCL_DIR=$d; break; }
    done
fi
if [ -z "$NCCL_DIR" ] && [ -n "$PY" ]; then
    d=$("$PY" -c "import nvidia.nccl as n; print(list(n.__path__)[0])" 2>/dev/null)
    [ -n "$d" ] && [ -f "$d/include/nccl.h" ] && NCCL_DIR=$d
fi
NCCL_LIBDIR=""
for d in "$NCCL_DIR/lib" "$NCCL_DIR/lib64" "$NCCL_DIR/lib/x86_64-linux-gnu"; do
    ls "$d"/libnccl.so* >/dev/null 2>&1 && { NCCL_LIBDIR=$d; break; }
done
[ -n "$NCCL_LIBDIR" ] && export LD_LIBRARY_PATH="$NCCL_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "nccl: ${NCCL_DIR:-not found} $( [ -n "$NCCL_DIR" ] && grep -m3 -E '#define NCCL_(MAJOR|MINOR|PATCH)' "$NCCL_DIR/include/nccl.h" | awk '{printf "%s.", $3}')"
if [ -z "$NVCC" ]; then
    echo "device_check: no nvcc: cannot build the CUDA backend" >&2
    row build FAIL "no nvcc"
fi

# ---- dependencies: the machine's own, else DG_DEPS_PREFIX ----------------------
section "dependencies"
P=${DG_DEPS_PREFIX:-}
[ -n "$P" ] && case "$P" in /*) ;; *) P=$ROOT/$P ;; esac
PCDIR=$B/pkgconfig
mkdir -p "$PCDIR" "$B/bin"
ZLIB_ARGS=()
if [ -n "$P" ]; then
    [ -d "$P/usr" ] || echo "WARNING: DG_DEPS_PREFIX=$P has no usr/"
    PL=$P/usr/lib/x86_64-linux-gnu
    if [ -f "$P/SYMLINKS" ]; then   # recreate links that the copy dropped
        while read -r l t; do
            [ -e "$P/$l" ] || [ -L "$P/$l" ] || ln -s "$t" "$P/$l" 2>/dev/null || echo "WARNING: cannot link $P/$l"
        done < "$P/SYMLINKS"
    fi
    # .pc files from the .debs say /usr: point them into the prefix
    for pc in "$PL/openblas-pthread/pkgconfig/openblas.pc" "$PL/pkgconfig/zlib.pc"; do
        [ -f "$pc" ] && sed -e "s|=/usr|=$P/usr|g" -e "s| /usr/| $P/usr/|g" -e "s|-I/usr|-I$P/usr|g" \
            -e "s|-L/usr|-L$P/usr|g" "$pc" > "$PCDIR/$(basename "$pc")"
    done
    export PKG_CONFIG_PATH="${PKG_CONFIG_PATH:+$PKG_CONFIG_PATH:}$PCDIR"
    export LD_LIBRARY_PATH="$PL:$PL/openblas-pthread:$P/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export CMAKE_PREFIX_PATH="$P/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    if ! command -v pkg-config >/dev/null && [ -x "$P/usr/bin/pkgconf" ]; then
        printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
            "$PL" "$P/usr/bin/pkgconf" > "$B/bin/pkg-config"
        chmod +x "$B/bin/pkg-config"
        export PATH="$B/bin:$PATH"
        echo "pkg-config: the prefix's pkgconf"
    fi
    if [ ! -f /usr/include/zlib.h ] && [ -f "$P/usr/include/zlib.h" ]; then
        ZLIB_ARGS=(-DZLIB_INCLUDE_DIR="$P/usr/include" -DZLIB_LIBRARY="$PL/libz.so")
    fi
fi
if command -v pkg-config >/dev/null && pkg-config --exists openblas; then
    echo "openblas: $(pkg-config --modversion openblas) ($(pkg-config --variable=libdir openblas))"
else
    echo "WARNING: pkg-config finds no openblas (set DG_DEPS_PREFIX, see scripts/fetch_device_debs.sh)"
fi

# ---- build ------------------------------------------------------------------------
TEST_CUDA=""; MNIST_MLP=""; BUILD_HOW=""; TEST_NCCL=""; TEST_GRAPH=""; TEST_CNN=""; MNIST_CNN=""
NCCL_ARGS=()
[ -n "$NCCL_DIR" ] && NCCL_ARGS=(-DNCCL_ROOT="$NCCL_DIR")
cmake_build() {
    command -v cmake >/dev/null || { echo "no cmake"; return 1; }
    local v; v=$(cmake --version | head -1 | awk '{print $3}')
    if [ "$(printf '%s\n3.25\n' "$v" | sort -V | head -1)" != "3.25" ]; then
        echo "cmake $v is older than 3.25"; return 1
    fi
    run_to 180 cmake -S "$ROOT" -B "$B/cmake" -DCMAKE_BUILD_TYPE=Release -DDG_WITH_CUDA=ON \
        -DCMAKE_CUDA_COMPILER="$NVCC" -DDG_WITH_MPI=OFF -DDG_WITH_PROTOBUF=OFF -DDG_TEST_CUDA=ON \
        -DDG_MNIST_DIR="$MNIST" "${ZLIB_ARGS[@]}" "${NCCL_ARGS[@]}" || return 1
    run_to 300 cmake --build "$B/cmake" -j "$JOBS" --target test_cuda mnist_mlp test_nccl test_cuda_graph \
        test_cnn_cuda mnist_cnn || return 1
    TEST_CUDA=$B/cmake/tests/test_cuda
    MNIST_MLP=$B/cmake/examples/mnist_mlp
}

# gcc + nvcc, no CMake: the sources of libdgrad without MPI or protobuf
manual_build() {
    local o=$B/manual cflags blas
    mkdir -p "$o/obj"
    if command -v pkg-config >/dev/null && pkg-config --exists openblas; then
        blas="$(pkg-config --cflags --libs openblas) -Wl,-rpath,$(pkg-config --variable=libdir openblas)"
    else
        blas="-lopenblas"
    fi
    local inc="-I$ROOT/core/include -I$ROOT/comm/include -I$ROOT/train/include -I$ROOT/core/src -I$ROOT/core/src/cpu -I$ROOT/core/src/cuda -I$ROOT/comm/src"
    [ -n "$P" ] && inc="$inc -I$P/usr/include" && blas="$blas -L$P/usr/lib/x86_64-linux-gnu -Wl,-rpath,$P/usr/lib/x86_64-linux-gnu"
    local cudainc=$CUDA_ROOT/include
    [ -f "$cudainc/cuda_runtime_api.h" ] || cudainc=$CUDA_ROOT/targets/x86_64-linux/include
    cflags="-O2 -std=c11 -Wall -Wextra -fno-math-errno -fPIC -DDG_HAVE_CUDA=1 $inc -I$cudainc $blas"
    local srcs=("$ROOT"/core/src/*.c "$ROOT"/core/src/{cpu,nn,io}/*.c "$ROOT"/comm/src/{comm,comm_local,ddp,dist_checkpoint}.c)
    local nccllib=""
    if [ -n "$NCCL_DIR" ] && [ -n "$NCCL_LIBDIR" ]; then
        cflags="$cflags -DDG_HAVE_NCCL=1 -I$NCCL_DIR/include"
        srcs+=("$ROOT/comm/src/comm_nccl.c")
        nccllib="$(ls "$NCCL_LIBDIR"/libnccl.so "$NCCL_LIBDIR"/libnccl.so.2 2>/dev/null | head -1) -Wl,-rpath,$NCCL_LIBDIR"
    fi
    local pids=() f
    for f in "${srcs[@]}"; do
        # shellcheck disable=SC2086
        "$CC" $cflags -c "$f" -o "$o/obj/$(basename "$f").o" & pids+=($!)
    done
    for f in "$ROOT"/core/src/cuda/*.cu; do
        # shellcheck disable=SC2086
        "$NVCC" -O3 -std=c++17 --fmad=false -allow-unsupported-compiler -gencode arch=compute_90,code=sm_90 \
            -gencode arch=compute_90,code=compute_90 -Xcompiler=-Wall,-Wextra,-fPIC \
            -DDG_HAVE_CUDA=1 $inc -c "$f" -o "$o/obj/$(basename "$f").o" & pids+=($!)
    done
    local ok=0 p
    for p in "${pids[@]}"; do wait "$p" || ok=1; done
    [ $ok = 0 ] || return 1
    local cudalib=$CUDA_ROOT/lib64
    [ -d "$cudalib" ] || cudalib=$CUDA_ROOT/targets/x86_64-linux/lib
    local libs="$nccllib -L$cudalib -Wl,-rpath,$cudalib -lcublas -lcudart -lstdc++ $blas -lz -lpthread -lm -ldl"
    [ -n "$P" ] && libs="-L$P/usr/lib/x86_64-linux-gnu $libs"
    # shellcheck disable=SC2086
    "$CC" $cflags -I"$ROOT/tests" "$ROOT/tests/test_cuda.c" "$o"/obj/*.o $libs -o "$o/test_cuda" || return 1
    # shellcheck disable=SC2086
    local ex
    for ex in mnist_mlp mnist_cnn; do
        # shellcheck disable=SC2086
        "$CC" $cflags "$ROOT/examples/$ex.c" "$ROOT/examples/train.c" "$o"/obj/*.o $libs -o "$o/$ex" || return 1
    done
    local t
    for t in test_nccl test_cuda_graph test_cnn_cuda; do
        # shellcheck disable=SC2086
        "$CC" $cflags -I"$ROOT/tests" "$ROOT/tests/$t.c" "$o"/obj/*.o $libs -o "$o/$t" || return 1
    done
    TEST_CUDA=$o/test_cuda
    MNIST_MLP=$o/mnist_mlp
}

if [ -n "$NVCC" ]; then
    section "build (jobs: $JOBS)"
    tb=$(date +%s)
    if [ "${DG_FORCE_MANUAL:-0}" != 1 ] && cmake_build 2>&1 | tee -a "$LOG"  && [ "${PIPESTATUS[0]}" = 0 ]; then
        TEST_CUDA=$B/cmake/tests/test_cuda; MNIST_MLP=$B/cmake/examples/mnist_mlp; BUILD_HOW=cmake
        TEST_NCCL=$B/cmake/tests/test_nccl; TEST_GRAPH=$B/cmake/tests/test_cuda_graph
        TEST_CNN=$B/cmake/tests/test_cnn_cuda; MNIST_CNN=$B/cmake/examples/mnist_cnn
    else
        section "build with gcc + nvcc directly (no usable CMake build)"
        if manual_build 2>&1 | tee -a "$LOG" && [ "${PIPESTATUS[0]}" = 0 ]; then
            TEST_CUDA=$B/manual/test_cuda; MNIST_MLP=$B/manual/mnist_mlp; BUILD_HOW=manual
            TEST_NCCL=$B/manual/test_nccl; TEST_GRAPH=$B/manual/test_cuda_graph
            TEST_CNN=$B/manual/test_cnn_cuda; MNIST_CNN=$B/manual/mnist_cnn
        fi
    fi
    if [ -n "$BUILD_HOW" ] && [ -x "$TEST_CUDA" ]; then
        nw=$(grep -ci "warning" "$LOG")
        nccl=$(grep -m1 -o "NCCL=[A-Z]*" "$LOG" || true)
        [ "$BUILD_HOW" = manual ] && nccl="NCCL=$( [ -n "$NCCL_LIBDIR" ] && echo ON || echo OFF)"
        row build ok "$BUILD_HOW, $(( $(date +%s) - tb )) s, $nw warning line(s), $nccl"
    else
        row build FAIL "see $LOG"; TEST_CUDA=""; MNIST_MLP=""
    fi
fi

STATUS=0
[ -z "$TEST_CUDA" ] && STATUS=1

# ---- test_cuda, test_nccl, test_cuda_graph ------------------------------------------------
# gpu_test NAME BINARY TIMEOUT DESCRIPTION: run it, one row, a failure fails the script
gpu_test() {
    local name=$1 bin=$2 to=$3 rc ts nf detail
    section "$name ($4)"
    ts=$(date +%s)
    if [ -z "$bin" ] || [ ! -x "$bin" ]; then row "$name" FAIL "not built"; STATUS=1; return; fi
    DG_MNIST_DIR="$MNIST" run_to "$to" "$bin" 2>&1 | tee "$B/$name.log"
    rc=${PIPESTATUS[0]}
    LAST_RC=$rc
    detail="$(grep -E '^(ops|mlp|ddp|graph|loader)' "$B/$name.log" | sed 's/|/\//g' | tr '\n' ' ')"
    nf=$(grep -c "FAIL" "$B/$name.log")
    case $rc in
        0) row "$name" PASS "$(( $(date +%s) - ts )) s; $detail" ;;
        77) row "$name" SKIPPED "$(tail -1 "$B/$name.log")"; STATUS=1 ;;
        *) row "$name" FAIL "rc $rc, $nf failed check(s): $(grep -m2 FAIL "$B/$name.log" | sed 's/|/\//g' | tr '\n' ' ')$detail"; STATUS=1 ;;
    esac
}
if [ -n "$TEST_CUDA" ]; then
    gpu_test test_cuda "$TEST_CUDA" 240 "CUDA against CPU: every op, optimizers, MLP training"
    gpu_test test_nccl "$TEST_NCCL" 90 "nccl communicator on device buffers; DDP through NCCL and staged through the host"
    case $LAST_RC in 124|137) NCCL_HANGS=1 ;; esac   # then mnist_mlp below does without NCCL
    gpu_test test_cuda_graph "$TEST_GRAPH" 120 "whole-step CUDA graphs against eager training; pinned loader"
    gpu_test test_cnn_cuda "$TEST_CNN" 120 "CNN ops (conv, pooling, dropout, batch norm) CUDA against CPU"
fi

# ---- mnist_mlp --device cuda, 3 epochs: NCCL DDP, --cuda-graph, staged DDP -------------------
json_field() { sed -nE "s/.*\"$1\": \"?([^,\"}]*).*/\1/p" <<<"$2" | tail -1; }
# mnist_run LOGNAME LABEL ENV... -- ARGS...: one run, one row; prints its params_hash
mnist_run() {
    local log=$1 label=$2 envs=() rc j
    shift 2
    while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    section "mnist_mlp $* --epochs 3 ${envs[*]}"
    env ${envs[@]+"${envs[@]}"} DG_PROGRESS=lines timeout -k 10 120 "$MNIST_MLP" "$@" --data "$MNIST" --epochs 3 --json \
        > "$B/$log.log" 2>&1
    rc=$?
    tail -5 "$B/$log.log"
    j=$(grep '^{' "$B/$log.log" | tail -1)
    if [ "$rc" = 0 ] && [ -n "$j" ]; then
        row "$label" ok "comm $(json_field comm "$j"), loss $(json_field final_loss "$j"), test acc $(json_field test_accuracy "$j"), $(json_field train_samples_per_sec "$j") samples/s, params_hash $(json_field params_hash "$j")"
        MNIST_HASH=$(json_field params_hash "$j")
    else
        row "$label" FAIL "rc $rc: $(tail -1 "$B/$log.log" | sed 's/|/\//g')"
        MNIST_HASH=""
        return 1
    fi
}
if [ -n "$MNIST_MLP" ] && [ -n "$MNIST" ]; then
    h=()
    if [ "${NCCL_HANGS:-0}" = 1 ]; then
        mnist_run mnist_cuda "mnist_mlp cuda, 3 epochs (NCCL hung in test_nccl: local)" DG_COMM_BACKEND=local -- --device cuda
    else
        mnist_run mnist_cuda "mnist_mlp cuda, 3 epochs (DDP: NCCL if built)" -- --device cuda
    fi || STATUS=1
    h+=("$MNIST_HASH")
    # the graph run needs no communicator: local, so NCCL trouble cannot stop it
    mnist_run mnist_cuda_graph "mnist_mlp cuda --cuda-graph, 3 epochs" DG_COMM_BACKEND=local -- --device cuda --cuda-graph || STATUS=1
    h+=("$MNIST_HASH")
    mnist_run mnist_cuda_staged "mnist_mlp cuda, DDP staged through the host" DG_COMM_BACKEND=local -- --device cuda || STATUS=1
    h+=("$MNIST_HASH")
    if [ -n "${h[0]}" ] && [ "${h[0]}" = "${h[1]}" ] && [ "${h[0]}" = "${h[2]}" ]; then
        row "mnist_mlp cuda: eager = graph = staged" PASS "params_hash ${h[0]} in all three"
    else
        row "mnist_mlp cuda: eager = graph = staged" FAIL "params_hash: nccl ${h[0]:-?}, graph ${h[1]:-?}, staged ${h[2]:-?}"
        STATUS=1
    fi
else
    row "mnist_mlp cuda" skipped "no binary or DG_MNIST_DIR not set"
fi

# ---- mnist_cnn --device cuda, 1 epoch, against PyTorch's same CNN there ------------------------
if [ -n "$MNIST_CNN" ] && [ -x "$MNIST_CNN" ] && [ -n "$MNIST" ] && [ "$(left)" -gt 120 ]; then
    section "mnist_cnn --device cuda, 1 epoch"
    DG_COMM_BACKEND=local DG_PROGRESS=lines run_to 90 "$MNIST_CNN" --device cuda --data "$MNIST" --json \
        > "$B/mnist_cnn_cuda.log" 2>&1
    rc=$?
    tail -3 "$B/mnist_cnn_cuda.log"
    j=$(grep '^{' "$B/mnist_cnn_cuda.log" | tail -1)
    if [ "$rc" = 0 ] && [ -n "$j" ]; then
        CNN_DG=$(json_field train_samples_per_sec "$j")
        row "mnist_cnn cuda, 1 epoch" ok "test acc $(json_field test_accuracy "$j"), $CNN_DG samples/s, train $(json_field train_seconds "$j") s"
    else
        row "mnist_cnn cuda, 1 epoch" FAIL "rc $rc: $(tail -1 "$B/mnist_cnn_cuda.log" | sed 's/|/\//g')"
        STATUS=1
    fi
    if [ -n "$PY" ] && [ "$(left)" -gt 90 ]; then
        section "PyTorch: the same CNN on cuda, 1 epoch"
        run_to 80 "$PY" "$ROOT/bench/torch_mnist_cnn.py" --device cuda --data "$MNIST" --json \
            > "$B/torch_cnn_cuda.log" 2>&1
        j=$(grep '^{' "$B/torch_cnn_cuda.log" | tail -1)
        if [ -n "$j" ]; then
            CNN_PT=$(json_field train_samples_per_sec "$j")
            row "PyTorch CNN cuda, 1 epoch" ok "test acc $(json_field test_accuracy "$j"), $CNN_PT samples/s$( [ -n "${CNN_DG:-}" ] && awk -v a="$CNN_DG" -v b="$CNN_PT" 'BEGIN { printf ", dgrad/torch %.2fx", a / b }')"
        else
            row "PyTorch CNN cuda, 1 epoch" skipped "$(tail -1 "$B/torch_cnn_cuda.log" | sed 's/|/\//g')"
        fi
    fi
else
    row "mnist_cnn cuda" skipped "no binary, no DG_MNIST_DIR or $(left) s left"
fi

# ---- benchmark ------------------------------------------------------------------------------
BENCH=$B/bench.log
: > "$BENCH"
if [ -n "$TEST_CUDA" ]; then
    section "benchmark: dgrad"
    run_to 90 "$TEST_CUDA" --bench cuda 2>&1 | tee -a "$BENCH"
    run_to 90 "$TEST_CUDA" --bench cuda-readback 2>&1 | tee -a "$BENCH"
    run_to 90 "$TEST_CUDA" --bench cuda-graph 2>&1 | tee -a "$BENCH"
    run_to 90 "$TEST_CUDA" --bench cpu 2>&1 | tee -a "$BENCH"
fi
if [ -n "$PY" ] && [ "$(left)" -gt 60 ]; then
    section "benchmark: PyTorch"
    run_to $(( $(left) > 240 ? 240 : $(left) - 20 )) "$PY" "$ROOT/bench/torch_mlp_cuda.py" --mode both 2>&1 | tee -a "$BENCH"
fi

# ---- optional, time permitting: compute-sanitizer, mnist_mlp on the CPU -------------------------
SAN=$(command -v compute-sanitizer || ls "$CUDA_ROOT/bin/compute-sanitizer" 2>/dev/null || true)
if [ -n "$TEST_CUDA" ] && [ -n "$SAN" ] && [ "$(left)" -gt 150 ]; then
    section "compute-sanitizer memcheck: test_cuda --ops-only"
    run_to $(( $(left) - 40 < 150 ? $(left) - 40 : 150 )) "$SAN" --tool memcheck --error-exitcode 9 \
        "$TEST_CUDA" --ops-only 2>&1 | tail -25 | tee "$B/memcheck.log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" = 0 ]; then row memcheck PASS "compute-sanitizer memcheck, ops only"
    else row memcheck FAIL "rc $rc: $(grep -m1 -E 'ERROR|Invalid' "$B/memcheck.log" | sed 's/|/\//g')"; fi
else
    row memcheck skipped "${SAN:-no compute-sanitizer}, $(left) s left"
fi
if [ -n "$MNIST_MLP" ] && [ -n "$MNIST" ] && [ "$(left)" -gt 60 ]; then
    mnist_run mnist_cpu "mnist_mlp cpu, 3 epochs" -- --device cpu || true
else
    row "mnist_mlp cpu" skipped "time"
fi

# ---- summary ----------------------------------------------------------------------------------
section "summary (total $(elapsed) s)"
echo
echo "| check | status | detail |"
echo "|---|---|---|"
for r in "${ROWS[@]}"; do
    IFS='|' read -r a s d <<<"$r"
    echo "| $a | $s | $d |"
done
echo
echo "MLP 784-50-10 training step, batch 64, Adam, FP32, data on the device; median of 7 windows:"
echo
echo "| implementation | device | steps/s (median) | min | max |"
echo "|---|---|---|---|---|"
grep '^BENCH ' "$BENCH" | sed 's/^BENCH //' | while read -r j; do
    impl=$(json_field impl "$j")
    if [ "$impl" = dgrad ] && [ "$(json_field graph "$j")" = true ]; then
        impl="dgrad (CUDA graph)"
    elif [ "$impl" = dgrad ] && [ "$(json_field label_readback "$j")" = true ]; then
        impl="dgrad (labels read back each step)"
    fi
    echo "| $impl | $(json_field device "$j") | $(json_field steps_per_s "$j") | $(json_field min "$j") | $(json_field max "$j") |"
done
# the goals: dgrad with graphs >= 3x PyTorch eager and >= PyTorch with CUDA graphs
rate() { grep '^BENCH ' "$BENCH" | grep "\"impl\": \"$1\"" | grep -- "$2" | head -1 | sed -nE 's/.*"steps_per_s": ([0-9.]+).*/\1/p'; }
g=$(rate dgrad '"graph": true'); te=$(rate torch-eager ''); tg=$(rate torch-cuda-graph '')
if [ -n "$g" ] && [ -n "$te" ] && [ -n "$tg" ]; then
    echo
    awk -v g="$g" -v te="$te" -v tg="$tg" 'BEGIN {
        printf "dgrad (CUDA graph) %.0f steps/s: %.2fx PyTorch eager (goal >= 3x: %s), %.2fx PyTorch CUDA graph (goal >= 1x: %s)\n",
               g, g / te, g >= 3 * te ? "met" : "NOT met", g / tg, g >= tg ? "met" : "NOT met" }'
    e=$(rate dgrad '"device": "cuda", "label_readback": false, "graph": false')
    [ -n "$e" ] && awk -v e="$e" -v te="$te" -v tg="$tg" 'BEGIN {
        printf "dgrad eager %.0f steps/s: %.2fx PyTorch eager, %.2fx PyTorch CUDA graph\n", e, e / te, e / tg }'
fi
exit $STATUS
