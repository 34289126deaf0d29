#!/usr/bin/env bash
# `make openood`: install OpenOOD (not on the package index) from SRC — a tarball, a folder or a
# URL — into DIR, with --no-deps (it pins old packages the adapter does not need; docs/openood.md),
# plus faiss-cpu (KNN), statsmodels and libmr (OpenMax; its sdist needs Cython and numpy).
# usage: .ci/openood.sh SRC DIR PYTHON
set -euo pipefail
src="$1" dir="$2" py="$3"
offline="OPENOOD_SRC=../shared/vendor/OpenOOD-3c35632ee91b.tar.gz"
fail() { echo "make openood: $1. Fix: make openood $offline (or another tarball or folder of the pinned commit)" >&2; exit 2; }
rm -rf "$dir/src" && mkdir -p "$dir/src" "$dir/wheels"
if [ -d "$src" ]; then
  cp -r "$src"/. "$dir/src/"
else
  case "$src" in
    http*) curl -fsSL --max-time 120 "$src" -o "$dir/openood.tar.gz" 2>/dev/null \
             || fail "could not download $src (offline?)"
           src="$dir/openood.tar.gz";;
  esac
  [ -f "$src" ] || fail "no OpenOOD tarball or folder at $src"
  tar -xzf "$src" -C "$dir/src" --strip-components=1 || fail "$src is not a .tar.gz of OpenOOD"
fi
"$py" -m pip install --quiet --no-deps -e "$dir/src"
"$py" -m pip install --quiet faiss-cpu statsmodels Cython
"$py" -m pip wheel --quiet --no-build-isolation --no-deps libmr==0.1.9 -w "$dir/wheels"
"$py" -m pip install --quiet --no-deps "$dir"/wheels/libmr-*.whl
"$py" -c "import openood, faiss, libmr; print('OpenOOD installed from $1')"
