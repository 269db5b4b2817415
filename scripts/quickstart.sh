#!/usr/bin/env bash
# From a fresh Debian 12 machine (as root) to a trained MNIST MLP:
# install what is missing, build, fetch MNIST, train the seed example.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target mnist_mlp
scripts/fetch_mnist.sh data/mnist
exec build/examples/mnist_mlp --data data/mnist "$@"
