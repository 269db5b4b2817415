#!/usr/bin/env bash
# mnist_cnn on a subset: one epoch over the first N training images on one
# thread; the loss must fall and test accuracy reach MIN_ACC. Then bad flags
# must fail with exit 2 and one line naming the flag.
#   test_mnist_cnn.sh MNIST_CNN DATA_DIR N MIN_ACC
set -u
exe=$1 data=$2 n=$3 min=$4
out=$(OPENBLAS_NUM_THREADS=1 "$exe" --data "$data" --limit-train "$n" --threads 1 --json) || { echo "$out"; exit 1; }
echo "$out"
json=$(printf '%s\n' "$out" | tail -1)
python3 - "$json" "$min" <<'PY' || exit 1
import json, sys
r = json.loads(sys.argv[1])
ok = r["final_loss"] < r["first_loss"] and r["test_accuracy"] >= float(sys.argv[2])
print("first loss %.4f, mean loss %.4f, test accuracy %.4f (need >= %s): %s"
      % (r["first_loss"], r["final_loss"], r["test_accuracy"], sys.argv[2], "ok" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
for bad in "--device tpu" "--limit-train 0" "--lr -1" "--batch-size x" "--bogus"; do
    err=$("$exe" $bad 2>&1 >/dev/null); rc=$?
    echo "$bad -> rc=$rc: $err"
    [ "$rc" = 2 ] && [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || exit 1
done
err=$("$exe" --data /nonexistent 2>&1 >/dev/null); rc=$?
echo "--data /nonexistent -> rc=$rc: $err"
[ "$rc" = 1 ] || exit 1
