#!/usr/bin/env bash
# mnist_mlp checkpoints, run as a user would:
#  (a) stop mid-epoch with --max-steps, --resume: the same params_hash and
#      final loss as the uninterrupted run (bitwise), at 1 rank and, with
#      MPI, at 2 ranks;
#  (b) save at 2 ranks, resume at 1: it trains on and finishes;
#  (c) bad checkpoints (truncated, bit-flipped, wrong version, another
#      model): a one-line error naming the file, exit status non-zero.
# usage: test_checkpoint_resume.sh MNIST_MLP MNIST_DIR CKPT_WRITER [MPIEXEC ARGS...]
set -u
B=$1 M=$2 W=$3
shift 3
MPI=("$@")
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
fail() { echo "test_checkpoint_resume: FAIL: $*" >&2; exit 1; }
hash_of() { grep -o '"params_hash": "[0-9a-f]*"' "$1"; }
loss_of() { grep -o '"final_loss": [0-9.]*' "$1"; }
common=(--data "$M" --epochs 2 --threads 1 --json --quiet)

run_case() {   # run_case NAME NP MAXSTEPS EVERY   (NP 1 runs without mpirun)
  local name=$1 np=$2 max=$3 every=$4 launch=()
  [ "$np" -gt 1 ] && launch=("${MPI[@]}" -n "$np")
  "${launch[@]}" "$B" "${common[@]}" > "$D/$name.full" || fail "$name: uninterrupted run"
  "${launch[@]}" "$B" "${common[@]}" --checkpoint-dir "$D/$name" --checkpoint-every "$every" \
      --max-steps "$max" > "$D/$name.part" || fail "$name: run to --max-steps $max"
  grep -q "\"steps\": $max," "$D/$name.part" || fail "$name: did not stop at step $max"
  "${launch[@]}" "$B" "${common[@]}" --checkpoint-dir "$D/$name" --resume > "$D/$name.resumed" \
      || fail "$name: resumed run"
  local h1 h2 l1 l2
  h1=$(hash_of "$D/$name.full"); h2=$(hash_of "$D/$name.resumed")
  l1=$(loss_of "$D/$name.full"); l2=$(loss_of "$D/$name.resumed")
  [ -n "$h1" ] && [ "$h1" = "$h2" ] || fail "$name: params_hash differs: full $h1, resumed $h2"
  [ "$l1" = "$l2" ] || fail "$name: epoch loss differs: full $l1, resumed $l2"
  n=$(ls "$D/$name"/ckpt-*.dgck | wc -l)
  [ "$n" -le 3 ] || fail "$name: --keep 3 left $n checkpoints"
  echo "$name: resumed at step $max, $h2 $l2 as uninterrupted"
}

# (a) 1 rank: stop mid-epoch 2 (938 steps per epoch)
run_case np1 1 1000 300
if [ ${#MPI[@]} -gt 0 ]; then
  # (a) 2 ranks: stop mid-epoch 1 (469 steps per epoch), resume crosses the epoch
  run_case np2 2 300 100
  # (b) save at 2 ranks, resume at 1
  cp -r "$D/np2" "$D/w21"
  rm -f "$D/w21"/ckpt-[0-9]*.dgck && "${MPI[@]}" -n 2 "$B" "${common[@]}" --checkpoint-dir "$D/w21" \
      --max-steps 300 > /dev/null || fail "w21: 2-rank run"
  "$B" "${common[@]}" --checkpoint-dir "$D/w21" --resume > "$D/w21.out" 2> "$D/w21.err" || fail "w21: resume at 1 rank"
  grep -q '"world_size": 1' "$D/w21.out" && grep -q '"test_accuracy": 0\.[6-9]' "$D/w21.out" \
      || fail "w21: resumed run did not finish sensibly: $(cat "$D/w21.out")"
  echo "w21: saved at 2 ranks, resumed at 1: $(loss_of "$D/w21.out") $(grep -o '"steps": [0-9]*' "$D/w21.out")"
fi

# (c) bad checkpoints: each alone in a directory
good=$(ls "$D"/np1/ckpt-*.dgck | head -1)
size=$(stat -c %s "$good")
mk() { mkdir -p "$D/bad_$1"; cp "$good" "$D/bad_$1/ckpt-5.dgck"; echo "$D/bad_$1/ckpt-5.dgck"; }
f=$(mk truncated); head -c $((size / 2)) "$good" > "$f"
f=$(mk flipped); printf '\xff' | dd of="$f" bs=1 seek=$((size / 2)) conv=notrunc status=none
f=$(mk version); printf '\x07' | dd of="$f" bs=1 seek=9 conv=notrunc status=none
mkdir -p "$D/bad_model" && "$W" model "$D/bad_model" 784 40 || fail "ckpt_writer model"
for kind in truncated flipped version model; do
  "$B" "${common[@]}" --checkpoint-dir "$D/bad_$kind" --resume > "$D/$kind.out" 2> "$D/$kind.err"
  rc=$?
  [ $rc -ne 0 ] || fail "$kind: exit status 0"
  [ "$(wc -l < "$D/$kind.err")" -eq 1 ] || fail "$kind: not one line: $(cat "$D/$kind.err")"
  grep -q "bad_$kind/ckpt-5.dgck" "$D/$kind.err" || fail "$kind: message does not name the file: $(cat "$D/$kind.err")"
  [ -s "$D/$kind.out" ] && fail "$kind: it trained anyway"
  echo "$kind: rc $rc: $(cat "$D/$kind.err")"
done
if [ ${#MPI[@]} -gt 0 ]; then   # at 2 ranks every rank fails, rank 0 says why (once)
  "${MPI[@]}" -n 2 "$B" "${common[@]}" --checkpoint-dir "$D/bad_flipped" --resume > "$D/np2bad.out" 2> "$D/np2bad.err" \
      && fail "np2 flipped: exit status 0"
  [ "$(grep -c 'bad_flipped/ckpt-5.dgck: checksum mismatch' "$D/np2bad.err")" -eq 1 ] \
      || fail "np2 flipped: message: $(cat "$D/np2bad.err")"
  echo "np2 flipped: both ranks exit non-zero, one message"
fi
grep -q "checkpoint has 4 parameters \[40x784, 40, 10x40, 10\], model has 4 parameters \[50x784, 50, 10x50, 10\]" \
    "$D/model.err" || fail "model: message: $(cat "$D/model.err")"
grep -q "version 7" "$D/version.err" || fail "version: message: $(cat "$D/version.err")"
echo "test_checkpoint_resume: OK"
