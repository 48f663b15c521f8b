#!/usr/bin/env bash
# Update the locks scripts/setup.sh installs from: every package at an exact version with its sha256,
# for Linux x86_64 and Python 3.11 (docs/scale-out.md#the-locks).
#   locks/cpu.txt    torch's CPU build, pyproject.toml's dependencies and the dev extra (and locks/cpu.in)
#   locks/cuda.txt   torch's CUDA build, the dev and gpu extras (and locks/cuda.in); the rest as in cpu.txt
#   locks/qlora.txt  bitsandbytes (the qlora extra), which QLORA=1 adds to either
# A locked package keeps its version unless asked: arguments go to `uv pip compile`, for example
# `bash scripts/lock.sh --upgrade-package peft` (one package) or `--upgrade` (all). uv, pinned below, is
# installed into a scratch directory that is removed afterwards. Needs PyPI, and PyTorch's CPU index for
# torch (CPU_LINKS= to change it); where that cannot be reached, the directories pip's find-links name.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
UV=uv==0.13.8
CPU_LINKS=${CPU_LINKS:-https://download.pytorch.org/whl/cpu/torch/}  # PyTorch's CPU-only torch wheels
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$PYTHON" -m pip install --disable-pip-version-check -q --target "$tmp/uv" "$UV"
reachable='import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)'
if [[ "$CPU_LINKS" == http* ]] && ! "$PYTHON" -c "$reachable" "$CPU_LINKS" 2>/dev/null; then
  # as setup.sh falls back to pip's default sources: the CPU wheel pip would install here, hashed
  found=${PIP_FIND_LINKS:-$("$PYTHON" -m pip config get global.find-links 2>/dev/null || true)}
  [ -n "$found" ] || { echo "lock: $CPU_LINKS cannot be reached: set CPU_LINKS to where torch's CPU wheel is" >&2; exit 1; }
  echo "lock: $CPU_LINKS cannot be reached: torch's CPU wheel from pip's find-links ($found)"
  CPU_LINKS=$found
fi
links=()
for place in $CPU_LINKS; do links+=(--find-links "$place"); done

compile() {  # uv pip compile for the supported platform, with hashes; then the arguments given
  "$tmp/uv/bin/uv" pip compile --quiet pyproject.toml --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --generate-hashes --custom-compile-command "bash scripts/lock.sh" "$@"
}
names() { grep -E '^[A-Za-z0-9]' "$1" | cut -d' ' -f1 | sed 's/===/==/'; }  # name==version of each locked package

compile locks/cpu.in --extra dev "${links[@]}" -o locks/cpu.txt "$@"
names locks/cpu.txt >"$tmp/cpu-pins.txt"
grep -v '^torch==' "$tmp/cpu-pins.txt" >"$tmp/shared-pins.txt"
compile locks/cuda.in --extra dev --extra gpu -c "$tmp/shared-pins.txt" -o locks/cuda.txt "$@"
# torch===: exactly the CUDA build's version, never a local build such as 2.13.0+cpu that pip may find
sed -i -e "s|$tmp/shared-pins.txt|locks/cpu.txt|" -e 's/^torch==\([^= ]*\) /torch===\1 /' locks/cuda.txt
names locks/cuda.txt >"$tmp/cuda-pins.txt"

# bitsandbytes on top of each build must add itself and nothing else: then one small lock serves both
for build in cpu cuda; do
  extras=(--extra dev --extra qlora "${links[@]}")
  [ "$build" = cuda ] && extras=(--extra dev --extra qlora --extra gpu)
  compile "locks/$build.in" "${extras[@]}" -c "$tmp/$build-pins.txt" --no-header \
    -o "$tmp/$build-qlora.txt"
  added=$(names "$tmp/$build-qlora.txt" | grep -vxF -f "$tmp/$build-pins.txt" || true)
  if [[ ! "$added" =~ ^bitsandbytes==[^[:space:]]+$ ]]; then
    echo "lock: the qlora extra on locks/$build.txt adds more than bitsandbytes: $added" >&2
    exit 1
  fi
done
{
  echo "# locks/qlora.txt: bitsandbytes (the qlora extra), which \`QLORA=1 bash scripts/setup.sh\` installs"
  echo "# with locks/cpu.txt or locks/cuda.txt; it needs nothing they lack. Made by: bash scripts/lock.sh"
  awk '/^[A-Za-z0-9]/ { keep = /^bitsandbytes==/ } keep' "$tmp/cpu-qlora.txt"
} >locks/qlora.txt
for lock in locks/cpu.txt locks/cuda.txt locks/qlora.txt; do
  echo "lock: $lock, $(names "$lock" | wc -l) packages, sha256 $(sha256sum "$lock" | cut -c1-12)"
done
