#!/usr/bin/env bash
# mnist_cnn under mpirun with DDP, on a subset (12288 images, batch 128 per
# rank, 2 ranks: 48 steps):
#  (a) it learns (the loss falls, test accuracy >= 0.9), and at the end every
#      rank holds the same parameters and batch-norm buffers
#      ("replicas_agree", a hash compared across ranks);
#  (b) stopped at step 20 with --max-steps and --checkpoint-dir, then
#      --resume: the same params_hash, epoch loss AND test accuracy as the
#      uninterrupted run (the accuracy needs the running statistics, which
#      only the checkpoint's buffers bring back).
# usage: test_mnist_cnn_ddp.sh MNIST_CNN MNIST_DIR MPIEXEC [ARGS...]
set -u
B=$1 M=$2
shift 2
MPI=("$@")
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
fail() { echo "test_mnist_cnn_ddp: FAIL: $*" >&2; exit 1; }
field() { grep -o "\"$1\": [^,}]*" "$2"; }
run() { OPENBLAS_NUM_THREADS=1 "${MPI[@]}" -n 2 "$B" --data "$M" --limit-train 12288 --batch-size 128 \
            --threads 1 --json --quiet "$@"; }

run > "$D/full" || fail "2-rank run: $(cat "$D/full")"
cat "$D/full"
python3 - "$(tail -1 "$D/full")" <<'PY' || fail "(a)"
import json, sys
r = json.loads(sys.argv[1])
ok = (r["world_size"] == 2 and r["comm"] == "mpi" and r["steps"] == 48 and r["replicas_agree"] is True
      and r["final_loss"] < r["first_loss"] and r["test_accuracy"] >= 0.9)
print("(a) 2 ranks: loss %.4f -> %.4f, test accuracy %.4f, replicas agree: %s: %s"
      % (r["first_loss"], r["final_loss"], r["test_accuracy"], r["replicas_agree"], "ok" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY

run --checkpoint-dir "$D/ck" --checkpoint-every 10 --max-steps 20 > "$D/part" || fail "run to --max-steps 20"
grep -q '"steps": 20,' "$D/part" || fail "did not stop at step 20: $(cat "$D/part")"
run --checkpoint-dir "$D/ck" --resume > "$D/resumed" || fail "resumed run: $(cat "$D/resumed")"
for f in params_hash final_loss test_accuracy replicas_agree; do
  a=$(field $f "$D/full"); b=$(field $f "$D/resumed")
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "(b) $f differs: uninterrupted $a, resumed $b"
done
echo "(b) resumed at step 20: $(field params_hash "$D/resumed"), $(field test_accuracy "$D/resumed") as uninterrupted"
echo "test_mnist_cnn_ddp: OK"
