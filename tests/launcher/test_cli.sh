#!/usr/bin/env bash
# Bad input to launcher/dgrun: each case must exit 2 with one line on
# stderr that names the culprit; --help and --dry-run must work.
# Usage: test_cli.sh DGRUN
set -u
dgrun=$1
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect REGEX ARGS...: exit 2, one stderr line matching REGEX
expect() {
  local re=$1; shift
  "$dgrun" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$? lines
  lines=$(wc -l <"$tmp/err")
  if [ "$rc" -ne 2 ] || ! grep -Eq -- "$re" "$tmp/err" || [ "$lines" -ne 1 ]; then
    echo "FAIL: dgrun $*: exit $rc (want 2), stderr ($lines lines):"; cat "$tmp/err"
    fail=1
  else
    echo "ok: dgrun $* -> $(cat "$tmp/err")"
  fi
}

expect "unknown option '--frobnicate'" -n 2 --frobnicate true
expect "-n '0' is not a positive integer" -n 0 true
expect "-n '-3' is not a positive integer" -n -3 true
expect "-n 'two' is not a positive integer" -n two true
expect "-n '1.5' is not a positive integer" -n 1.5 true
expect "missing -n" true
expect "-n needs a value" -n
expect "missing PROGRAM" -n 2
expect "missing PROGRAM" -n 2 --max-restarts 1
expect "program 'no-such-program-dg' not found" -n 2 no-such-program-dg
expect "program '/etc/passwd' is not an executable" -n 2 /etc/passwd
expect "--hosts 'a:1,b' is malformed at 'b'" -n 2 --hosts a:1,b true
expect "--hosts 'a:1,,b:1' is malformed" -n 2 --hosts a:1,,b:1 true
expect "--hosts 'a:x' is malformed" -n 1 --hosts a:x true
expect "--hosts 'a:0,b:2' is malformed at 'a:0'" -n 2 --hosts a:0,b:2 true
expect "--hosts 'a:1' has 1 slots but -n is 2" -n 2 --hosts a:1 true
expect "--max-restarts '-1'" -n 2 --max-restarts -1 true
expect "--max-restarts 'x'" -n 2 --max-restarts x true
expect "--timeout 'soon'" -n 2 --timeout soon true
expect "--launcher 'ssh'" -n 2 --launcher ssh true
expect "--restart-delay .x." -n 2 --restart-delay x true
expect "--kill-after .-1." -n 2 --kill-after -1 true
expect "--cpus-per-rank '0'" -n 2 --cpus-per-rank 0 true

# --help: exit 0, documents every option
"$dgrun" --help >"$tmp/help" 2>&1 || { echo "FAIL: dgrun --help exits non-zero"; fail=1; }
for opt in --nproc --hosts --max-restarts --timeout --mpirun-args --launcher --cpus-per-rank --restart-delay --kill-after \
           --dry-run --resume --checkpoint-dir LOCAL_RANK CUDA_VISIBLE_DEVICES bind-to srun; do
  grep -q -- "$opt" "$tmp/help" || { echo "FAIL: dgrun --help does not mention $opt"; fail=1; }
done

# --dry-run: the launch command, with binding that fits the cores
if command -v mpirun >/dev/null; then
  out=$(DGRUN_CORES=4 SLURM_JOB_ID='' "$dgrun" -n 2 --dry-run true)
  grep -q -- "--map-by slot:PE=2 --bind-to core" <<<"$out" || { echo "FAIL: 2 ranks on 4 cores: $out"; fail=1; }
  out=$(DGRUN_CORES=2 SLURM_JOB_ID='' "$dgrun" -n 3 --dry-run true)
  grep -q -- "--oversubscribe --bind-to none" <<<"$out" || { echo "FAIL: 3 ranks on 2 cores: $out"; fail=1; }
  out=$(DGRUN_CORES=8 SLURM_JOB_ID='' "$dgrun" -n 4 --hosts h1:2,h2:2 --dry-run true)
  grep -q -- "--host h1:2" <<<"$out" && grep -q -- "PE=4" <<<"$out" ||
    { echo "FAIL: --hosts h1:2,h2:2 on 8 cores: $out"; fail=1; }
  echo "ok: --dry-run binding and hosts"
fi
out=$(SLURM_JOB_ID=1 "$dgrun" -n 2 --dry-run true 2>&1)
grep -q "srun --mpi=pmix" <<<"$out" || { echo "FAIL: under Slurm: $out"; fail=1; }
expect "--hosts cannot be used with srun" -n 2 --launcher srun --hosts a:1,b:1 true

# the rank shim, and restarts with --resume appended once
if command -v mpirun >/dev/null; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  out=$(SLURM_JOB_ID='' "$dgrun" -n 2 --timeout 7 sh -c 'echo "r=$RANK w=$WORLD_SIZE l=$LOCAL_RANK t=$DG_COMM_TIMEOUT"' 2>&1)
  grep -q "r=1 w=2 l=1 t=7" <<<"$out" || { echo "FAIL: rank environment: $out"; fail=1; }
  out=$(SLURM_JOB_ID='' "$dgrun" -n 1 --max-restarts 2 --restart-delay 0 sh -c 'echo "args: $*"; exit 3' x a 2>&1)
  rc=$?
  [ $rc -eq 3 ] && [ "$(grep -c '^args: a --resume$' <<<"$out")" = 2 ] &&
    grep -q "dgrun: attempt 1 of 3 failed (exit 3.*restarting in 0 s with --resume" <<<"$out" ||
    { echo "FAIL: restarts (exit $rc): $out"; fail=1; }
  echo "ok: rank environment and restarts"
fi
exit $fail
