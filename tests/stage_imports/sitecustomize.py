"""On PYTHONPATH in the test session (conftest): a pipeline stage's process records, as it exits, which of the
project's modules it loaded, for tests/test_stage_imports.py to check against the stage's deps in dvc.yaml."""

import atexit
import json
import os
import sys
from pathlib import Path

RECORD = os.environ.get("LORAVC_STAGE_IMPORTS")


def _record() -> None:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if not RECORD or spec is None or not spec.name.startswith("stages."):
        return
    loaded = [m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)]
    files = sorted({str(Path(name).resolve()) for name in loaded})
    dvc_yaml = Path("dvc.yaml")  # kept with the record: `dvc exp run --temp` removes its copy of the repository
    text = dvc_yaml.read_text(encoding="utf-8") if dvc_yaml.is_file() else None
    record = {"stage": spec.name.split(".", 1)[1], "cwd": os.getcwd(), "argv": sys.argv, "files": files}
    record["dvc_yaml"] = text
    Path(RECORD).mkdir(parents=True, exist_ok=True)
    path = Path(RECORD) / f"{spec.name}-{os.getpid()}.json"
    path.with_suffix(".partial").write_text(json.dumps(record), encoding="utf-8")
    path.with_suffix(".partial").replace(path)  # whole, for a check that reads while other tests run


if RECORD:
    atexit.register(_record)
