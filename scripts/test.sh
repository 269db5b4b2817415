#!/usr/bin/env bash
# Build and run the whole test suite: a Release build, then the same suite
# under AddressSanitizer + UBSan. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
jobs=$(nproc)

# Tests read real MNIST from DG_MNIST_DIR, ../shared/data/mnist or data/mnist;
# fetch it if none of them has it.
if [ -z "${DG_MNIST_DIR:-}" ] && [ ! -e ../shared/data/mnist/train-labels-idx1-ubyte.gz ]; then
  scripts/fetch_mnist.sh data/mnist
fi
mnist=()
[ -n "${DG_MNIST_DIR:-}" ] && mnist=(-DDG_MNIST_DIR="$DG_MNIST_DIR")

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${mnist[@]}" >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure)

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDG_SANITIZE=ON -DDG_WITH_CUDA=OFF "${mnist[@]}" >/dev/null
cmake --build build-asan -j"$jobs"
# Open MPI's own allocations are not ours to chase: suppress its leaks. Its
# plugins must stay loaded for the suppressions to match their frames.
export OMPI_MCA_mca_base_component_disable_dlclose=1
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0:fast_unwind_on_malloc=0"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
(cd build-asan && ctest --output-on-failure)

# Fuzz the checkpoint and IDX readers for a short while (libFuzzer, clang;
# Debian's clang needs libclang-rt-*-dev for the fuzzer runtime).
probe=$(mktemp -d)
if command -v clang >/dev/null &&
   echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }' |
     clang -x c -fsanitize=fuzzer - -o "$probe/f" 2>/dev/null; then
  scripts/fuzz.sh "${DG_FUZZ_SECONDS:-30}"
else
  echo "test.sh: no clang with libFuzzer here; skipping the fuzzers"
fi
rm -rf "$probe"
