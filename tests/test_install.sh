#!/usr/bin/env bash
# Install dgrad into a temporary prefix, then build programs outside the
# tree against it, with find_package(dgrad) and with pkg-config:
# - consumer.c, the engine alone (a Linear layer's gradient);
# - the README's "Write your own model" program (cut out of README.md, so
#   the README's code is the code tested): its own model and dataset on
#   libdgrad_train, trained at 1 rank and, with MPI, 2 ranks; the loss
#   must fall and the replicas agree.
# usage: test_install.sh BUILD_DIR SOURCE_DIR [MPIEXEC]
set -euo pipefail
build=$1 src=$2 mpiexec=${3:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
for h in tensor.h comm.h dist_checkpoint.h train.h; do test -f "$tmp/prefix/include/dgrad/$h"; done

# the README's program, between its markers
awk '/<!-- walkthrough:begin -->/{on=1; next} /<!-- walkthrough:end -->/{on=0} on && !/^```/' \
  "$src/README.md" > "$tmp/spiral.c"
grep -q 'dg_train_main' "$tmp/spiral.c" || { echo "FAIL: no walkthrough program in README.md"; exit 1; }

export LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib64:${LD_LIBRARY_PATH:-}"
cmake -S "$src/tests/install" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DSPIRAL_SRC="$tmp/spiral.c" >/dev/null
cmake --build "$tmp/cm" >/dev/null
"$tmp/cm/consumer"

pcdir=$(dirname "$(find "$tmp/prefix" -name dgrad.pc | head -1)")
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs dgrad)
cc -std=c11 -Wall -Wextra -Werror "$src/tests/install/consumer.c" -o "$tmp/consumer_pc" $flags
"$tmp/consumer_pc"
cc -std=c11 -Wall -Wextra -Werror "$tmp/spiral.c" -o "$tmp/spiral_pc" $flags -lm

field() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(d[sys.argv[1]])' "$1"; }
check() {   # check NAME JSON_LINE WORLD
  local first final world agree
  first=$(field first_loss <<<"$2"); final=$(field final_loss <<<"$2")
  world=$(field world_size <<<"$2"); agree=$(field replicas_agree <<<"$2")
  python3 -c "import sys; sys.exit(0 if float('$final') < 0.5 * float('$first') else 1)" ||
    { echo "FAIL: $1: the loss did not fall ($first -> $final)"; exit 1; }
  [ "$world" = "$3" ] || { echo "FAIL: $1: world_size $world, want $3"; exit 1; }
  [ "$agree" = "True" ] || { echo "FAIL: $1: replicas disagree"; exit 1; }
  echo "ok: $1: loss $first -> $final at $3 rank(s)"
}
check "spiral (find_package)" "$("$tmp/cm/spiral" --epochs 3 --json --quiet)" 1
check "spiral (pkg-config)" "$("$tmp/spiral_pc" --epochs 3 --json --quiet)" 1
if [ -n "$mpiexec" ]; then
  out=$(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "$mpiexec" --allow-run-as-root --oversubscribe \
        --bind-to none --mca btl self,vader -n 2 "$tmp/cm/spiral" --epochs 3 --json --quiet)
  check "spiral (find_package, mpirun -n 2)" "$out" 2
fi
# bad input through the installed API: an unknown flag is named
if "$tmp/cm/spiral" --frobnicate 2>"$tmp/err"; then echo "FAIL: unknown flag accepted"; exit 1; fi
grep -q "unknown flag '--frobnicate'" "$tmp/err" || { echo "FAIL: unknown flag: $(cat "$tmp/err")"; exit 1; }
echo "install test: find_package and pkg-config consumers ran"
