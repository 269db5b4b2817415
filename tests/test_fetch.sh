#!/usr/bin/env bash
# test_fetch.sh - checks scripts/fetch_mnist.sh against a local MNIST copy.
#
# Usage: tests/test_fetch.sh SCRIPT MNIST_DIR
# MNIST_DIR holds the four files (.gz or plain). Empty: skipped (exit 77).
# Only --from is used, so no network is needed.
set -uo pipefail

script=${1:?usage: test_fetch.sh SCRIPT MNIST_DIR}
src=${2:-}
if [ -z "$src" ]; then
    echo "test_fetch: DG_MNIST_DIR is empty: skipped"
    exit 77
fi
NAMES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

tmp=$(mktemp -d /tmp/dg_test_fetch.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok: $1"; }
fail() { failed=$((failed + 1)); echo "FAIL: $1" >&2; }

# run NAME ARGS...: run the script, keep stdout+stderr in $out and rc in $rc.
run() { out=$(bash "$script" "$@" 2>&1); rc=$?; }

# A copy of the source as .gz files (whatever the source has).
good=$tmp/good
mkdir -p "$good"
for n in "${NAMES[@]}"; do
    if [ -f "$src/$n.gz" ]; then cp "$src/$n.gz" "$good/$n.gz"
    else gzip -6n -c "$src/$n" > "$good/$n.gz"; fi
    chmod 644 "$good/$n.gz"
done

# 1. fetch from a good copy
run --from "$good" "$tmp/dest"
if [ $rc = 0 ] && [[ $out == *verified* ]]; then pass "fetch --from verifies"
else fail "fetch --from: rc=$rc: $out"; fi
for n in "${NAMES[@]}"; do
    [ -f "$tmp/dest/$n.gz" ] || fail "missing $tmp/dest/$n.gz after fetch"
done

# 2. idempotent
run --from "$good" "$tmp/dest"
if [ $rc = 0 ] && [[ $out == *"already present"* ]]; then pass "second run does nothing"
else fail "second run: rc=$rc: $out"; fi

# 3. plain (uncompressed) source files are accepted and stored as .gz
plain=$tmp/plain
mkdir -p "$plain"
for n in "${NAMES[@]}"; do gzip -dc "$good/$n.gz" > "$plain/$n"; done
run --from "$plain" "$tmp/dest-plain"
if [ $rc = 0 ] && [ -f "$tmp/dest-plain/train-images-idx3-ubyte.gz" ]; then pass "plain source"
else fail "plain source: rc=$rc: $out"; fi
rm -rf "$plain"

# 4. a source file with one changed byte: non-zero, names the file,
#    installs nothing
bad=$tmp/bad
mkdir -p "$bad"
cp "$good"/*.gz "$bad/"
gzip -dc "$good/train-labels-idx1-ubyte.gz" > "$tmp/lbl"
printf '\x07' | dd of="$tmp/lbl" bs=1 seek=100 conv=notrunc status=none
gzip -6n -c "$tmp/lbl" > "$bad/train-labels-idx1-ubyte.gz"
run --from "$bad" "$tmp/dest-bad"
if [ $rc != 0 ] && [[ $out == *"$bad/train-labels-idx1-ubyte.gz"* ]] && [[ $out == *SHA-256* ]]
then pass "changed byte is caught and the file named"
else fail "changed byte: rc=$rc: $out"; fi
if compgen -G "$tmp/dest-bad/*.gz" >/dev/null; then fail "files installed from a bad source"
else pass "nothing installed from a bad source"; fi

# 5. a cut-off gzip file: non-zero, names the file
cp "$good"/*.gz "$bad/"
head -c 3000 "$good/t10k-labels-idx1-ubyte.gz" > "$bad/t10k-labels-idx1-ubyte.gz"
run --from "$bad" "$tmp/dest-bad"
if [ $rc != 0 ] && [[ $out == *"$bad/t10k-labels-idx1-ubyte.gz"* ]]; then pass "corrupt gzip is caught"
else fail "corrupt gzip: rc=$rc: $out"; fi

# 6. a missing source file: non-zero, names it
rm -f "$bad"/t10k-images-idx3-ubyte*
cp "$good/t10k-labels-idx1-ubyte.gz" "$bad/"
run --from "$bad" "$tmp/dest-bad"
if [ $rc != 0 ] && [[ $out == *t10k-images-idx3-ubyte* ]]; then pass "missing file is named"
else fail "missing file: rc=$rc: $out"; fi

# 7. a damaged DEST is repaired by the next run
printf 'junk' > "$tmp/dest/t10k-images-idx3-ubyte.gz"
run --from "$good" "$tmp/dest"
if [ $rc = 0 ] && cmp -s "$tmp/dest/t10k-images-idx3-ubyte.gz" "$good/t10k-images-idx3-ubyte.gz"
then pass "damaged DEST repaired"
else fail "repair: rc=$rc: $out"; fi

# 8. bad usage exits 2
run --dataset nope "$tmp/x"
if [ $rc = 2 ]; then pass "bad --dataset is a usage error"; else fail "bad --dataset: rc=$rc"; fi

echo "test_fetch: $passed passed, $failed failed"
[ $failed = 0 ]
