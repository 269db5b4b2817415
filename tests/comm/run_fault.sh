#!/bin/sh
# run_fault.sh GUARD_S WANT_NONZERO PATTERN MIN_MATCHES -- COMMAND...
# Runs COMMAND (an mpirun line) under `timeout GUARD_S` and passes if it
# finished before the guard, exited non-zero when WANT_NONZERO is 1, and its
# output has at least MIN_MATCHES lines matching the extended regex PATTERN.
guard=$1 want_nonzero=$2 pattern=$3 min=$4
shift 4
[ "$1" = "--" ] && shift
out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT
timeout "$guard" "$@" >"$out" 2>&1
rc=$?
cat "$out"
echo "--- run_fault.sh: exit status $rc"
if [ "$rc" -eq 124 ]; then
    echo "FAIL: still running after the ${guard} s guard (a rank hangs)"
    exit 1
fi
if [ "$want_nonzero" = 1 ] && [ "$rc" -eq 0 ]; then
    echo "FAIL: expected a non-zero exit status"
    exit 1
fi
if [ "$min" -gt 0 ]; then
    n=$(grep -c -E "$pattern" "$out")
    if [ "$n" -lt "$min" ]; then
        echo "FAIL: $n line(s) match '$pattern', want at least $min"
        exit 1
    fi
fi
echo "PASS"
