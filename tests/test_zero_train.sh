#!/usr/bin/env bash
# The trainer's --zero (ZeRO-1), run as a user would, with mnist_mlp:
#  (a) 2 ranks: the same params_hash as plain DDP (reduce-scatter and
#      all-reduce add the same two numbers), half the optimizer state per
#      rank; 1 rank: the seed's hash;
#  (b) stop at --max-steps with checkpoints written from shards, --resume:
#      the uninterrupted run's params_hash and final loss (bitwise);
#  (c) that checkpoint resumed at 1 rank, with and without --zero: it
#      trains on and finishes;
#  (d) flags --zero cannot go with: exit 2 and a one-line message.
# usage: test_zero_train.sh MNIST_MLP MNIST_DIR MPIEXEC ARGS...
set -u
B=$1 M=$2
shift 2
MPI=("$@")
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
fail() { echo "test_zero_train: FAIL: $*" >&2; exit 1; }
field() { sed -E "s/.*\"$1\": \"?([^,\"}]*).*/\1/" <"$2"; }
common=(--data "$M" --epochs 2 --threads 1 --json --quiet --seed 4)

# (a)
"${MPI[@]}" -n 2 "$B" "${common[@]}" > "$D/ddp" || fail "2 ranks, DDP"
"${MPI[@]}" -n 2 "$B" "${common[@]}" --zero > "$D/zero" || fail "2 ranks, --zero"
[ "$(field zero "$D/zero")" = true ] && [ "$(field replicas_agree "$D/zero")" = true ] || fail "--zero: $(cat "$D/zero")"
[ "$(field params_hash "$D/ddp")" = "$(field params_hash "$D/zero")" ] ||
  fail "params_hash: DDP $(field params_hash "$D/ddp"), --zero $(field params_hash "$D/zero")"
full=$(field optimizer_state_bytes "$D/ddp") shard=$(field optimizer_state_bytes "$D/zero")
[ "$shard" -le $((full / 2 + 1024)) ] && [ "$shard" -ge $((full / 2)) ] || fail "state per rank: $shard of $full bytes"
"$B" "${common[@]}" > "$D/one" && "$B" "${common[@]}" --zero > "$D/one_zero" || fail "1 rank"
[ "$(field params_hash "$D/one")" = "$(field params_hash "$D/one_zero")" ] || fail "1 rank: --zero changes the result"
echo "ok: --zero at 2 ranks: params_hash $(field params_hash "$D/zero") as DDP, optimizer state $shard of $full bytes"

# (b)
"${MPI[@]}" -n 2 "$B" "${common[@]}" --zero --checkpoint-dir "$D/ck" --checkpoint-every 100 --max-steps 300 \
    > "$D/part" || fail "--max-steps 300"
cp -r "$D/ck" "$D/ck300"   # for (c): the run below writes on into ck
"${MPI[@]}" -n 2 "$B" "${common[@]}" --zero --checkpoint-dir "$D/ck" --resume > "$D/resumed" || fail "--resume"
[ "$(field params_hash "$D/resumed")" = "$(field params_hash "$D/zero")" ] &&
  [ "$(field final_loss "$D/resumed")" = "$(field final_loss "$D/zero")" ] ||
  fail "resumed: $(field params_hash "$D/resumed") $(field final_loss "$D/resumed"), uninterrupted" \
       "$(field params_hash "$D/zero") $(field final_loss "$D/zero")"
echo "ok: resumed at step 300 from a sharded checkpoint: the uninterrupted params_hash and loss"

# (c)
for z in "" --zero; do
  rm -rf "$D/ck1" && cp -r "$D/ck300" "$D/ck1"
  "$B" "${common[@]}" $z --checkpoint-dir "$D/ck1" --resume > "$D/w1" 2> "$D/w1.err" || fail "resume at 1 rank $z: $(cat "$D/w1.err")"
  grep -q '"world_size": 1' "$D/w1" && grep -q '"test_accuracy": 0\.[89]' "$D/w1" || fail "1 rank $z: $(cat "$D/w1")"
  # from step 300 (38400 samples into epoch 1), 64 a step: 338 to end it, 938 for epoch 2
  [ "$(field steps "$D/w1")" = 1576 ] || fail "1 rank $z: $(field steps "$D/w1") steps: not resumed at step 300?"
  echo "ok: saved by --zero at 2 ranks, resumed at 1 ${z:-without --zero}: accuracy $(field test_accuracy "$D/w1")"
done

# (d)
for bad in "--sched onecycle|--zero needs --sched none" "--bf16-allreduce|drop --bf16-allreduce"; do
  flags=${bad%%|*} want=${bad#*|}
  "$B" --data "$M" --zero $flags > /dev/null 2> "$D/err"
  rc=$?
  [ $rc -eq 2 ] && grep -q -- "$want" "$D/err" && [ "$(wc -l < "$D/err")" -eq 1 ] || fail "--zero $flags: exit $rc: $(cat "$D/err")"
  echo "ok: --zero $flags: $(cat "$D/err")"
done
echo "test_zero_train: passed"
