#!/usr/bin/env bash
# mnist_lstm and mnist_vit (examples/) on a subset of MNIST:
#  - each learns: one epoch over the first N images on one thread, the
#    loss falls and test accuracy reaches MIN_ACC;
#  - mnist_vit with LayerDrop 0.3 on 2 ranks (MPIEXEC given): the ranks skip
#    different blocks, and the replicas agree;
#  - mnist_vit resumed from a checkpoint at step 30 ends with the params_hash
#    of the uninterrupted run (the LayerDrop draws are a function of the step);
#  - bad flags: exit 2 and one line naming the flag.
#   test_mnist_seq.sh MNIST_LSTM MNIST_VIT DATA_DIR N MIN_ACC [MPIEXEC]
# (N: the images of the subset; smaller under the sanitizers)
set -u
lstm=$1 vit=$2 data=$3 n=$4 min=$5 mpiexec=${6:-}
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
check() {   # check JSON MIN_ACC
    python3 - "$@" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
ok = r["final_loss"] < r["first_loss"] and r["test_accuracy"] >= float(sys.argv[2]) and r["replicas_agree"]
print("%s: %d rank(s), first loss %.4f, mean loss %.4f, test accuracy %.4f (need >= %s), replicas agree %s: %s"
      % (r["model"], r["world_size"], r["first_loss"], r["final_loss"], r["test_accuracy"], sys.argv[2],
         r["replicas_agree"], "ok" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
}
common=(--data "$data" --limit-train "$n" --threads 1 --json --quiet)
for exe in "$lstm" "$vit"; do
    out=$("$exe" "${common[@]}") || { echo "$out"; exit 1; }
    check "$(printf '%s\n' "$out" | tail -1)" "$min" || exit 1
done
if [ -n "$mpiexec" ]; then
    out=$("$mpiexec" --oversubscribe --bind-to none --mca btl self,vader -n 2 "$vit" "${common[@]}" --layerdrop 0.3) ||
        { echo "$out"; exit 1; }
    check "$(printf '%s\n' "$out" | tail -1)" "$min" || exit 1
fi
# exact resume across the LayerDrop draws
short=(--data "$data" --limit-train 1280 --threads 1 --json --quiet --epochs 2 --layerdrop 0.3)
full=$("$vit" "${short[@]}" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["params_hash"])')
"$vit" "${short[@]}" --checkpoint-dir "$tmp/ck" --checkpoint-every 10 --max-steps 30 >/dev/null || exit 1
resumed=$("$vit" "${short[@]}" --checkpoint-dir "$tmp/ck" --resume | tail -1 |
          python3 -c 'import json,sys; print(json.load(sys.stdin)["params_hash"])')
echo "params_hash: uninterrupted $full, resumed at step 30 $resumed"
[ -n "$full" ] && [ "$full" = "$resumed" ] || { echo "FAIL: the resumed run differs"; exit 1; }
# bad flags: exit 2 (1 for a model the flags cannot build), one line, naming the flag
for bad in "$vit --layerdrop 1.5" "$vit --layerdrop -0.1" "$vit --heads 5" "$vit --width x" "$lstm --hidden 0"; do
    read -r exe flag value <<<"$bad"
    err=$("$exe" "$flag" "$value" --data "$data" 2>&1 >/dev/null); rc=$?
    echo "${exe##*/} $flag $value -> rc=$rc: $err"
    want=2
    [ "$flag" = --heads ] && want=1 && flag=heads
    [ "$rc" = "$want" ] && [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] && [[ "$err" == *"$flag"* ]] ||
        fail "${exe##*/} $flag $value"
done
err=$("$vit" --device cuda --cuda-graph --sched none --data "$data" 2>&1 >/dev/null); rc=$?
echo "mnist_vit --device cuda --cuda-graph --sched none -> rc=$rc: $err"
[ "$rc" = 2 ] && [[ "$err" == *"changes per step"* ]] || fail "--cuda-graph accepted"
echo "passed"
