"""loravc.tune.storage: where a study lives (a journal file or a database) and how each trial is sampled."""

import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from loravc.core.errors import UserError
from loravc.tune.params import TuneParams
from loravc.tune.storage import make_sampler, open_study_storage, require_optuna, shown, storage_of


def test_a_study_lives_in_a_journal_file_or_a_database(tmp_path: Path) -> None:
    repo = tmp_path
    assert storage_of(TuneParams(study="s"), repo) == str((repo / ".dvc" / "tmp" / "tune" / "s.journal").resolve())
    assert storage_of(TuneParams(storage="studies/s.journal"), repo) == str((repo / "studies" / "s.journal").resolve())
    # the trials' train stages run in other directories: a relative SQLite file is the repository's
    assert storage_of(TuneParams(storage="sqlite:///shared.db"), repo) == f"sqlite:///{(repo / 'shared.db').resolve()}"
    assert storage_of(TuneParams(storage="sqlite:////srv/s.db"), repo) == "sqlite:////srv/s.db"
    url = "postgresql+psycopg2://tuner:s3cret@db:5432/optuna"
    assert storage_of(TuneParams(storage=url), repo) == url
    message = r"^tune\.storage: redis:// is not a database Optuna supports \(sqlite, postgresql, mysql\)$"
    with pytest.raises(UserError, match=message):
        storage_of(TuneParams(storage="redis://cache:6379/0"), repo)


def test_a_database_url_is_shown_without_its_password() -> None:
    assert shown("postgresql://tuner:s3cret@db:5432/optuna") == "postgresql://tuner:***@db:5432/optuna"
    assert shown("mysql+pymysql://tuner@db/optuna") == "mysql+pymysql://tuner@db/optuna"  # none to hide
    assert shown("/repo/.dvc/tmp/tune/lora.journal") == "/repo/.dvc/tmp/tune/lora.journal"


def test_a_database_storage_records_heartbeats_and_retries_stale_trials(tmp_path: Path) -> None:
    assert isinstance(open_study_storage(str(tmp_path / "s.journal")), optuna.storages.JournalStorage)
    database = open_study_storage(f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(database, optuna.storages.RDBStorage) and database.get_heartbeat_interval() == 60
    assert isinstance(database.get_heartbeat_stale_trial_callback(), optuna.storages.RetryHeartbeatStaleTrialCallback)


class IntegrityError(Exception):
    """SQLAlchemy's, by name: two processes created a new database's tables at once."""


def test_the_process_that_loses_the_race_to_create_a_database_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []
    slept: list[float] = []

    def rdb(url: str, **kwargs: Any) -> str:
        attempts.append(url)
        if len(attempts) < 3:
            raise IntegrityError("UNIQUE constraint failed: studies.study_name")
        return "opened"

    monkeypatch.setattr(optuna.storages, "RDBStorage", rdb)
    monkeypatch.setattr("loravc.tune.storage.time.sleep", slept.append)
    assert open_study_storage("sqlite:///s.db") == "opened"
    assert len(attempts) == 3 and slept == [1, 2]

    def refused(url: str, **kwargs: Any) -> str:
        raise ConnectionRefusedError("no such host")

    monkeypatch.setattr(optuna.storages, "RDBStorage", refused)
    with pytest.raises(ConnectionRefusedError):  # not a race: no retry
        open_study_storage("postgresql://db/optuna")
    assert slept == [1, 2]


def first_point(sampler: Any) -> tuple[float, int]:
    trial = optuna.create_study(sampler=sampler).ask()
    return trial.suggest_float("x", 0.0, 1.0), trial.suggest_categorical("c", [1, 2, 3])


def test_each_trial_is_sampled_by_the_tune_sections_sampler_and_seed() -> None:
    tpe, random = TuneParams(sampler="tpe"), TuneParams(sampler="random")
    assert isinstance(make_sampler(tpe, 1), optuna.samplers.TPESampler)
    assert isinstance(make_sampler(random, 1), optuna.samplers.RandomSampler)
    assert first_point(make_sampler(tpe, 1)) == first_point(make_sampler(tpe, 1))
    assert first_point(make_sampler(tpe, 1)) != first_point(make_sampler(tpe, 2))
    grid = TuneParams(sampler="grid")
    assert {first_point(make_sampler(grid, seed, {"c": 3}))[1] for seed in range(8)} == {3}  # the point it is given


def test_without_optuna_tune_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(UserError, match=r"^loravc tune needs Optuna: run `bash scripts/setup.sh`"):
        require_optuna()
