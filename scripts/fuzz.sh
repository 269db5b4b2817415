#!/usr/bin/env bash
# Build the libFuzzer targets (tests/fuzz/*.c) with clang, ASan and
# -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION (checkpoint checksums are not
# enforced, so mutations reach the parser) into build-fuzz, then run each
# for SECONDS with a seed corpus: small valid checkpoints (ckpt_writer tiny
# and tiny-bn, the latter with buffers)
# and small IDX files cut from real MNIST (plain and gzip); fuzz_request
# (dgserve's JSON request parser, serve/request.c; built when dgserve is,
# i.e. with libmicrohttpd and jansson) from tests/fuzz/request/ (valid and
# invalid KServe v2 and TF Serving bodies).
# usage: scripts/fuzz.sh [SECONDS]   (default 30 per target; DG_FUZZ_SECONDS too)
# Environment: DG_MNIST_DIR (else ../shared/data/mnist or data/mnist),
# DG_FUZZ_BUILD (default build-fuzz). Exit status non-zero if a target
# crashed; the input is kept in build-fuzz/fuzz-artifacts/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-${DG_FUZZ_SECONDS:-30}}
B=${DG_FUZZ_BUILD:-$root/build-fuzz}
command -v clang >/dev/null || { echo "fuzz.sh: clang not found (apt-get install clang)" >&2; exit 1; }

mkdir -p "$B"
flags="-g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -DDG_NO_CLONES"
cmake -S "$root" -B "$B" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DDG_FUZZ=ON -DDG_WITH_PROTOBUF=ON -DDG_WITH_MPI=OFF -DDG_WITH_CUDA=OFF -DBUILD_SHARED_LIBS=OFF \
      "-DCMAKE_C_FLAGS=$flags" > "$B/configure.log" 2>&1 || { cat "$B/configure.log" >&2; exit 1; }
cmake --build "$B" -j"${DG_JOBS:-2}" --target fuzz_checkpoint fuzz_idx ckpt_writer > "$B/build.log" 2>&1 \
  || { tail -40 "$B/build.log" >&2; exit 1; }
targets="checkpoint idx"
if cmake --build "$B" --target help 2>/dev/null | grep fuzz_request >/dev/null; then
  cmake --build "$B" -j"${DG_JOBS:-2}" --target fuzz_request >> "$B/build.log" 2>&1 || { tail -40 "$B/build.log" >&2; exit 1; }
  targets="$targets request"
else
  echo "fuzz.sh: fuzz_request left out (dgserve is not built: libmicrohttpd or jansson missing)" >&2
fi

seeds=$B/fuzz-seeds
rm -rf "$seeds"
mkdir -p "$seeds/checkpoint" "$seeds/idx" "$B/fuzz-corpus/checkpoint" "$B/fuzz-corpus/idx" "$B/fuzz-corpus/request" \
         "$B/fuzz-artifacts"
cp -r "$root/tests/fuzz/request" "$seeds/request"
ASAN_OPTIONS=detect_leaks=0 "$B/tests/ckpt_writer" tiny "$seeds/ckpt-tmp" >/dev/null
cp "$seeds"/ckpt-tmp/ckpt-*.dgck "$seeds/checkpoint/tiny.dgck"
rm -rf "$seeds/ckpt-tmp"
ASAN_OPTIONS=detect_leaks=0 "$B/tests/ckpt_writer" tiny-bn "$seeds/ckpt-tmp" >/dev/null
cp "$seeds"/ckpt-tmp/ckpt-*.dgck "$seeds/checkpoint/tiny-bn.dgck"
rm -rf "$seeds/ckpt-tmp"

mnist=${DG_MNIST_DIR:-}
for cand in "$root/../shared/data/mnist" "$root/data/mnist"; do
  [ -z "$mnist" ] && [ -e "$cand/t10k-labels-idx1-ubyte.gz" ] && mnist=$cand
done
cut_idx() {   # cut_idx FILE.gz HEADER_BYTES_AFTER_COUNT ITEMS ITEM_BYTES OUT: the header with count ITEMS
  local src=$1 extra=$2 items=$3 item=$4 out=$5
  { zcat "$src" | head -c 4; printf "\\x$(printf %02x $((items >> 24 & 255)))\\x$(printf %02x $((items >> 16 & 255)))"
    printf "\\x$(printf %02x $((items >> 8 & 255)))\\x$(printf %02x $((items & 255)))"
    zcat "$src" | tail -c +9 | head -c $((extra + items * item)); } > "$out" || true
  gzip -c "$out" > "$out.gz"
}
if [ -n "$mnist" ]; then
  cut_idx "$mnist/t10k-labels-idx1-ubyte.gz" 0 16 1 "$seeds/idx/labels16"
  cut_idx "$mnist/t10k-images-idx3-ubyte.gz" 8 2 784 "$seeds/idx/images2"
else
  echo "fuzz.sh: no MNIST found: IDX seeds are synthetic" >&2
  printf '\x00\x00\x08\x01\x00\x00\x00\x03\x07\x02\x01' > "$seeds/idx/labels3"
fi

rc=0
for t in $targets; do
  echo "fuzz.sh: fuzz_$t for ${secs}s"
  ASAN_OPTIONS=detect_leaks=1 "$B/tests/fuzz_$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 -artifact_prefix="$B/fuzz-artifacts/$t-" \
      "$B/fuzz-corpus/$t" "$seeds/$t" > "$B/fuzz_$t.log" 2>&1 || { rc=1; echo "fuzz.sh: fuzz_$t FAILED:" >&2; tail -40 "$B/fuzz_$t.log" >&2; }
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$B/fuzz_$t.log" | sed "s/^/  fuzz_$t: /" || true
done
[ $rc -eq 0 ] && echo "fuzz.sh: OK (no crash in ${secs}s per target)"
exit $rc
