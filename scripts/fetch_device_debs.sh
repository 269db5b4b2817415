#!/usr/bin/env bash
# Download (not install) the Debian packages that a GPU machine without
# OpenBLAS, zlib headers or pkg-config needs to build dgrad, and unpack them
# into a prefix that scripts/device_check.sh uses through DG_DEPS_PREFIX.
#
#   scripts/fetch_device_debs.sh [DIR]     default DIR: .dev/debs (git-ignored)
#
# Result: DIR/*.deb and DIR/prefix/usr/{include,lib/x86_64-linux-gnu,bin}.
# Carry DIR/prefix to the device machine and set DG_DEPS_PREFIX to it.
# Packages are for Debian 12 amd64 (glibc 2.36); they run on any x86-64
# Linux with glibc >= 2.34.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.dev/debs}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

pkgs=(libopenblas0-pthread libopenblas-pthread-dev libgfortran5 libquadmath0
      zlib1g zlib1g-dev pkgconf-bin libpkgconf3)

cd "$dir"
if ! apt-get download "${pkgs[@]}" >/dev/null 2>&1; then
  echo "fetch_device_debs: apt-get download failed; refreshing the package lists" >&2
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
  apt-get download "${pkgs[@]}"
fi

rm -rf prefix
mkdir -p prefix
for d in *.deb; do dpkg-deb -x "$d" prefix; done

# Keep it small enough to carry (the device tool carries 64 MiB in all):
# no static archives, no LAPACK, no docs. libz.so points to an absolute
# /lib path in the .deb: point it into the prefix.
lib=prefix/usr/lib/x86_64-linux-gnu
find prefix -name '*.a' -delete
rm -rf prefix/usr/share "$lib"/cmake "$lib"/openblas-pthread/cmake \
       "$lib"/openblas-pthread/liblapack.so* "$lib"/openblas-pthread/libblas.so*
ln -sf ../../../lib/x86_64-linux-gnu/libz.so.1 "$lib"/libz.so

# A list of the symlinks, in case carrying the folder drops them:
# device_check.sh recreates the missing ones.
(cd prefix && find . -type l -printf '%p %l\n' > SYMLINKS)

# what device_check.sh looks for
for f in prefix/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
         "$lib"/openblas-pthread/libopenblas.so "$lib"/openblas-pthread/pkgconfig/openblas.pc \
         prefix/usr/include/zlib.h "$lib"/libz.so prefix/usr/bin/pkgconf; do
  [ -e "$f" ] || { echo "fetch_device_debs: missing $f after unpacking" >&2; exit 1; }
done
ls -1 *.deb
du -sh prefix
echo "fetch_device_debs: done; use DG_DEPS_PREFIX=$dir/prefix"
