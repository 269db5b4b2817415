#!/usr/bin/env bash
# Install dgrad into a temporary prefix, then build a program outside the
# tree against it twice: with find_package(dgrad) and with pkg-config.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
test -f "$tmp/prefix/include/dgrad/tensor.h"

cmake -S "$src/tests/install" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib64:${LD_LIBRARY_PATH:-}" "$tmp/cm/consumer"

pcdir=$(dirname "$(find "$tmp/prefix" -name dgrad.pc | head -1)")
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs dgrad)
cc -std=c11 "$src/tests/install/consumer.c" -o "$tmp/consumer_pc" $flags
LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib64:${LD_LIBRARY_PATH:-}" "$tmp/consumer_pc"
echo "install test: find_package and pkg-config consumers ran"
