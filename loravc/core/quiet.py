"""Library output a user cannot act on, left out of every stage and `loravc` command (docs/errors.md).

`quiet_libraries` runs first in each of them (loravc.core.errors.run_main), before any library is imported:
the libraries' own progress-bar switches, and a filter for each known notice, matched by its logger or
warning category and its exact text. The project's own warnings and errors, and any other library line,
still print. LORAVC_VERBOSE=1 leaves every library as it is.
"""

import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

VERBOSE = "LORAVC_VERBOSE"

PROGRESS_BARS_OFF = {
    # transformers' bars ("Loading weights", "Writing model shards") follow huggingface_hub's switch, as
    # transformers.utils.logging.disable_progress_bar does
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets' map bars ("Tokenizing train dataset", "Packing ...")
}

LOG_NOTICES = {
    # PEFT imports bitsandbytes (the qlora extra) wherever it is installed; on a CPU with AVX512-BF16 bitsandbytes
    # 0.50.2 then looks for an optional kernel for its repacked 4-bit layout, on the Hugging Face Hub through the
    # `kernels` package, and says so when it is missing. That layout is the one loravc.core.quantization.after_load
    # turns off, so neither line says anything about a run here.
    "bitsandbytes.backends.cpu.ops": r"Failed to load CPU gemm_4bit_forward from kernels-community: ",
    "kernels._internals.hf_hub": r"Skipping publisher trust check for '[^']+' because Hugging Face Hub is in offline",
    # checkpoints saved within a second of each other (a fast run): it orders them by step instead, as it should
    "transformers.trainer_utils": r"mtime may not be reliable on this filesystem, falling back to numerical ordering",
    # lm-evaluation-harness given the model evaluate has loaded (loravc.evaluate.harness), in one process, as meant
    "lm_eval.models.huggingface": r"`pretrained` model kwarg is not of type `str`|Passed an already-initialized model",
}
"""Logger name -> the start of the one message silenced on it."""


class DropNotice(logging.Filter):
    """Drops the records whose message starts with `pattern` (a regular expression); lets every other through."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def verbose() -> bool:
    return os.environ.get(VERBOSE, "") not in ("", "0")


def quiet_libraries() -> None:
    """Progress bars off and the known notices filtered in this process (and the processes it starts), unless
    LORAVC_VERBOSE is set. Imports no library: the switches are read when each library loads."""
    if verbose():
        return
    for name, value in PROGRESS_BARS_OFF.items():
        os.environ.setdefault(name, value)
    for name, pattern in LOG_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNotice) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(DropNotice(pattern))


@contextmanager
def without_warning(message: str, category: type[Warning]) -> Iterator[None]:
    """Within the block, the one warning whose message starts with `message` (a regular expression) of
    `category` is silenced: for a notice about what the block itself takes care of (unless LORAVC_VERBOSE)."""
    with warnings.catch_warnings():
        if not verbose():
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


@contextmanager
def progress_bars_off() -> Iterator[None]:
    """Within the block, no tqdm bar is drawn, whatever its caller asks: for a library that draws its own with no
    switch (lm-evaluation-harness, in loravc.evaluate.harness). Unless LORAVC_VERBOSE is set."""
    if verbose():
        yield
        return
    from tqdm import std

    descriptor, init = vars(std.tqdm)["__init__"], std.tqdm.__init__

    def silent(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **(kwargs | {"disable": True}))

    std.tqdm.__init__ = silent  # type: ignore[method-assign]
    try:
        yield
    finally:
        std.tqdm.__init__ = descriptor  # type: ignore[method-assign]


def quiet_gguf_reading() -> None:
    """transformers' GGUF reader draws a "Converting and de-quantizing GGUF tensors" bar with no switch of its
    own: in this process, it reads without one (unless LORAVC_VERBOSE is set)."""
    if verbose():
        return
    from functools import partial

    from transformers import modeling_gguf_pytorch_utils as reader

    bar = getattr(reader, "tqdm", None)
    if bar is not None and not isinstance(bar, partial):
        reader.tqdm = partial(bar, disable=True)
