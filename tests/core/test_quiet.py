"""loravc.core.quiet: the known library notices are dropped, every other line stays, LORAVC_VERBOSE keeps them all.
(The pipeline runs' stderr as a whole: tests/test_quiet_runs.py.)"""

import logging
import os
import warnings

import pytest

from loravc.core import quiet

KERNELS = "Skipping publisher trust check for 'kernels-community/x' because Hugging Face Hub is in offline mode."
BNB = "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'. Please make sure"


def notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    logging.getLogger("kernels._internals.hf_hub").warning(KERNELS)
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning(BNB)
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("something else")
    return [record.getMessage() for record in caplog.records]


def test_known_notices_are_dropped_by_their_logger_and_text_only(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(quiet.VERBOSE, raising=False)
    quiet.quiet_libraries()
    quiet.quiet_libraries()  # twice: one filter per logger
    assert notices(caplog) == ["something else"]
    assert len(logging.getLogger("kernels._internals.hf_hub").filters) == 1
    assert all(os.environ[name] == value for name, value in quiet.PROGRESS_BARS_OFF.items())
    logging.getLogger("kernels._internals.other").warning(KERNELS)  # another logger's line stays
    assert [record.name for record in caplog.records][-1] == "kernels._internals.other"


def test_without_warning_silences_one_message_in_its_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(quiet.VERBOSE, raising=False)
    pissa = "PiSSA changes the base weights of the model and should thus not be used with other adapters."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet.without_warning("PiSSA changes the base weights", UserWarning):
            warnings.warn(pissa, UserWarning, stacklevel=1)
            warnings.warn("another notice", UserWarning, stacklevel=1)
        warnings.warn(pissa, UserWarning, stacklevel=1)
        monkeypatch.setenv(quiet.VERBOSE, "1")
        with quiet.without_warning("PiSSA changes the base weights", UserWarning):
            warnings.warn(pissa, UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["another notice", pissa, pissa]


def test_verbose_leaves_the_libraries_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(quiet.VERBOSE, "1")
    for name in quiet.PROGRESS_BARS_OFF:
        monkeypatch.delenv(name, raising=False)
    quiet.quiet_libraries()
    assert not any(name in os.environ for name in quiet.PROGRESS_BARS_OFF)


def test_progress_bars_off_in_the_block_only(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from tqdm import std
    from tqdm.auto import tqdm

    monkeypatch.delenv(quiet.VERBOSE, raising=False)
    before = vars(std.tqdm)["__init__"]
    with quiet.progress_bars_off():
        assert list(tqdm(range(3), desc="Running loglikelihood requests", disable=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    assert vars(std.tqdm)["__init__"] is before
    list(tqdm(range(3), desc="after"))
    assert "after" in capsys.readouterr().err
