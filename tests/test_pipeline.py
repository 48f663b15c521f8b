"""The versioning acceptance test: every committed version comes back byte for byte."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from loravc.core.metadata import VERSION_ID_RE
from loravc.data.labels import SMOLLM2_CHATML, chat_prompt
from loravc.evaluate.evaluation import generate
from loravc.export.use import load_version
from tests.conftest import UP_TO_DATE, dvc, git, lora_rank_from_weights, ran_stages, sha256_tree, update_params


def test_repro_commit_change_rank_and_restore_each_version(versions_repo: dict[str, Any], tmp_path: Path) -> None:
    """The user story from an empty repository, as versions_repo told it (`dvc repro`, commit, the rank changed,
    `dvc repro`, commit): what each repro ran, and each version back byte for byte in a copy."""
    printed, adapters = versions_repo["repro"], versions_repo["adapter"]
    assert ran_stages(printed["r8"]) == {"base", "prepare", "train", "evaluate", "report"}
    assert "Running stage 'source'" in printed["r8"]  # on every repro: what base.source is made of
    assert "perplexity base" in printed["r8"]
    assert ran_stages(printed["r4"]) == {"train", "evaluate", "report"}  # the rank is a param of train's alone
    assert adapters["r4"] != adapters["r8"]

    repo = tmp_path / "repo"
    shutil.copytree(versions_repo["repo"], repo, symlinks=True)
    adapter = repo / "models" / "adapter"
    git(repo, "reset", "-q", "--hard")  # the workspace holds the experiment rank-two's results
    for name, r in (("r8", 8), ("r4", 4)):
        rev = versions_repo[name]
        assert "dvc.lock" in git(repo, "show", "--name-only", rev)
        git(repo, "checkout", "-q", rev)
        dvc(repo, "checkout")
        assert sha256_tree(adapter) == adapters[name] and lora_rank_from_weights(adapter) == {r}
        meta = json.loads((adapter / "metadata.json").read_text())
        assert meta["lora"]["r"] == r and VERSION_ID_RE.fullmatch(meta["version_id"])
        assert all((repo / "dvclive" / stage / "metrics.json").is_file() for stage in ("prepare", "train", "evaluate"))
    assert "tuned_perplexity" in dvc(repo, "metrics", "show", "--json").stdout

    git(repo, "checkout", "-q", "main")
    assert git(repo, "rev-parse", "HEAD") == versions_repo["r4"]
    assert "Stage 'train' didn't change" in dvc(repo, "repro").stdout
    assert sha256_tree(adapter) == adapters["r4"]


def test_bad_params_fail_clearly_and_the_version_survives(built_repo: Path) -> None:
    repo = built_repo
    before = sha256_tree(repo / "models" / "adapter")

    update_params(repo / "params.yaml", {"train": {"lora": {"r": -1}}})
    failed = dvc(repo, "repro", check=False)
    assert failed.returncode != 0
    assert "train.lora.r must be a positive integer" in failed.stderr + failed.stdout
    assert "Traceback" not in failed.stderr + failed.stdout
    # stage `source` loads every param first: the repro stops there, before any stage removed its outputs
    assert "failed to reproduce 'source'" in failed.stderr
    assert git(repo, "status", "--porcelain") == "M params.yaml"

    git(repo, "checkout", "-q", "HEAD", "--", "params.yaml", "dvc.lock", "dvclive", "reports")  # docs/experiments.md
    dvc(repo, "checkout", "--force")
    assert sha256_tree(repo / "models" / "adapter") == before


def chat(question: str, answer: str) -> dict:
    system = {"role": "system", "content": "Be brief."}  # short: SmolLM2's default system prompt is long
    return {"messages": [system, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


TRAIN = [chat(f"What is {a} plus {b}?", f"{a + b}.") for a in range(6) for b in range(4)]
TEST = [chat(f"What is {a} plus {b}?", f"{a + b}.") for a, b in ((7, 1), (9, 2), (8, 8), (6, 5))]
COMMON = ["-S", "data.train=data/sums", "-S", "train.max_length=256", "-S", "evaluate.max_new_tokens=3"]


@pytest.fixture(scope="module")
def sums_template(tmp_path_factory: pytest.TempPathFactory, built_repo_template: Path) -> dict[str, Any]:
    """The built repository with a user's chat data (data/sums, a fixed test.jsonl) and a local lm-eval task of
    theirs next to the shipped one, swapped in by one `dvc exp run` (the experiment `first`): copy, don't change."""
    repo = tmp_path_factory.mktemp("sums") / "repo"
    shutil.copytree(built_repo_template, repo, symlinks=True)
    write_jsonl(repo / "data" / "sums" / "train.jsonl", TRAIN)
    write_jsonl(repo / "data" / "sums" / "test.jsonl", TEST)
    pairs = [(record["messages"][1]["content"], record["messages"][2]["content"]) for record in TEST[:2]]
    write_jsonl(repo / "data" / "harness" / "sums.jsonl", [{"q": q, "a": a} for q, a in pairs])  # their likelihood
    (repo / "data" / "harness" / "sums.yaml").write_text(
        "task: sums\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data/harness/sums.jsonl\n"
        'test_split: test\noutput_type: loglikelihood\ndoc_to_text: "{{q}}"\ndoc_to_target: " {{a}}"\n'
        "metric_list:\n  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
    )
    harness = ["-S", "evaluate.harness=[python_module_docs,sums]", "-S", "evaluate.harness_limit=3"]
    return {"repo": repo, "out": dvc(repo, "exp", "run", "-n", "first", *COMMON, *harness).stdout}


@pytest.fixture
def sums_repo(sums_template: dict[str, Any], tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(sums_template["repo"], repo, symlinks=True)
    return repo


def test_own_chat_data_in_one_param_trains_on_the_assistant_turns(
    sums_template: dict[str, Any], sums_repo: Path, capsys
) -> None:
    """A directory of chat data with a fixed test.jsonl, swapped in with one -S; editing it reruns prepare."""
    from loravc.cli.main import main as loravc

    repo, out = sums_repo, sums_template["out"]
    assert ran_stages(out) == {"prepare", "train", "evaluate", "report"}
    assert "24 messages records from data/sums" in out and "(test: fixed, data/sums/test.jsonl)" in out
    assert "the loss trains on assistant tokens" in out

    meta = json.loads((repo / "models" / "adapter" / "metadata.json").read_text())
    assert meta["data"]["source"] == "data/sums" and meta["data"]["shape"] == "messages"
    assert meta["data"]["fixed_test"] == "data/sums/test.jsonl"
    assert meta["data"]["train_records"] == 16  # the tests' cap
    assert meta["training"]["loss_on"] == "assistant" and meta["training"]["chat_template"] == "loravc:smollm2-chatml"
    template = (repo / "models" / "adapter" / "chat_template.jinja").read_text()
    assert template == SMOLLM2_CHATML  # the version keeps the plain template, not the marked training one
    samples = (repo / "reports" / "samples.md").read_text()
    assert "## What is 7 plus 1?" in samples and "**reference:** 8." in samples

    model, tokenizer = load_version("first", repo=repo)
    question = "What is 2 plus 2?"
    as_chat = generate(model, tokenizer, [chat_prompt(question, tokenizer)], 3, templated=True)[0]
    as_text = generate(model, tokenizer, [question], 3)[0]
    loravc(["-C", str(repo), "generate", "first", question, "--max-new-tokens", "3"])
    assert capsys.readouterr().out == as_chat + "\n"  # the reply to a user message, through the chat template
    loravc(["-C", str(repo), "generate", "first", question, "--max-new-tokens", "3", "--raw"])
    assert capsys.readouterr().out == question + as_text + "\n"  # the text continued as is

    loravc(["-C", str(repo), "compare", "main", "first"])
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["data"] == ["data", "differs"]
    assert lines["source"][1:] == ["data/raw/pydoc_topics.jsonl", "data/sums"]
    assert lines["shape"][1:] == ["text", "messages"] and lines["data.train"][1:] == [
        '"data/raw/pydoc_topics.jsonl"',
        '"data/sums"',
    ]
    loravc(["-C", str(repo), "list"])
    listed = capsys.readouterr().out
    assert f"data/sums@{meta['data']['sha256'][:8]}" in listed and "data/raw/pydoc_topics.jsonl@" in listed

    assert dvc(repo, "status").stdout.strip() == UP_TO_DATE
    write_jsonl(repo / "data" / "sums" / "train.jsonl", [*TRAIN, chat("What is 5 plus 5?", "10.")])
    status = dvc(repo, "status", "prepare").stdout
    assert "changed deps" in status and "data/sums" in status


def test_task_scores_reach_dvc_metrics_and_compare_pairs_two_versions(sums_repo: Path, capsys, monkeypatch) -> None:
    """Chat data: evaluate answers every test prompt with base and tuned, scores them, records each answer;
    `dvc exp show` lists the scores, `loravc compare` pairs two versions' answers record by record."""
    from loravc.cli.main import main as loravc
    from loravc.evaluate import harness
    from loravc.evaluate.scoring import METRICS, compare_answers, score
    from loravc.versions.catalogue import Versions

    repo, test = sums_repo, TEST  # the experiment `first`: the data and tasks of sums_template
    metrics = json.loads((repo / "dvclive" / "evaluate" / "metrics.json").read_text())
    predictions = json.loads((repo / "reports" / "predictions.json").read_text())
    rows = predictions["records"]
    assert (
        predictions["metrics"] == ["exact_match", "f1", "chrf"]
        and len((repo / "reports" / "predictions.json").read_text().splitlines()) == 7
    )
    assert [row["reference"] for row in rows] == [r["messages"][-1]["content"] for r in test]
    assert metrics["task_records"] == 4
    for name in METRICS:
        for which in ("base", "tuned"):
            recorded = [row[which][name] for row in rows]
            assert recorded == [score(row[which]["answer"], row["reference"], [name])[name] for row in rows]
            assert metrics[f"{which}_{name}"] == pytest.approx(sum(recorded) / 4, abs=1e-3)
        assert metrics[f"{name}_gain_low"] <= metrics[f"{name}_gain"] <= metrics[f"{name}_gain_high"]
    # the lm-eval tasks, scored on the version with its adapter on (tuned) and off (base)
    model, tokenizer = load_version("first", repo=repo)
    monkeypatch.chdir(repo)  # the tasks' data paths are relative to the repository root, as in the stage
    names = ["python_module_docs", "sums"]
    manager = harness.load_tasks(names, repo / "data" / "harness")
    tuned = harness.run(model.get_base_model(), tokenizer, names, manager, batch_size=8, limit=3, seed=42)
    with model.disable_adapter():
        base = harness.run(model.get_base_model(), tokenizer, names, manager, batch_size=8, limit=3, seed=42)
    assert tuned["sums_perplexity"] != pytest.approx(base["sums_perplexity"])  # two different models scored
    for which, scores in (("tuned", tuned), ("base", base)):
        for key in ("python_module_docs_word_perplexity", "sums_perplexity"):
            assert metrics[f"{which}_harness_{key}"] == pytest.approx(scores[key], rel=1e-5)

    dvc(repo, "exp", "run", "-n", "second", *COMMON, "-S", "train.seed=7")
    shown = dvc(repo, "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    assert {"tuned_exact_match", "base_chrf", "chrf_gain", "chrf_gain_low", "chrf_gain_high"} <= set(shown)

    capsys.readouterr()  # what lm-eval printed above
    loravc(["-C", str(repo), "compare", "first", "second", "--json"])
    task = json.loads(capsys.readouterr().out)["task"]
    with Versions(repo) as versions:
        revs = [versions.resolve(name).rev for name in ("first", "second")]
    first, second = (json.loads(git(repo, "show", f"{rev}:reports/predictions.json"))["records"] for rev in revs)
    assert task == json.loads(json.dumps(compare_answers(first, second))) and task["records"] == 4
    chrf = task["metrics"]["chrf"]
    assert chrf["b_minus_a"] == pytest.approx(
        sum(b["tuned"]["chrf"] - a["tuned"]["chrf"] for a, b in zip(first, second, strict=True)) / 4, abs=1e-3
    )
    loravc(["-C", str(repo), "compare", "first", "second"])
    out = capsys.readouterr().out
    assert (
        "task scores, 4 shared test records" in out
        and f"{chrf['b_minus_a']:+.1f} [{chrf['low']:+.1f}, {chrf['high']:+.1f}]" in out
    )
    loravc(["-C", str(repo), "verify", "first", "--eval"])  # answers the recorded prompts again
    recorded = ", ".join(f"{n} {v:.1f} vs recorded {v:.1f}" for n, v in ((n, task["metrics"][n]["a"]) for n in METRICS))
    assert f"ok  task answers to 4 test prompts: {recorded} (4 identical)" in capsys.readouterr().out
    loravc(["-C", str(repo), "compare", "main", "first"])  # main trained on text: no answers to pair
    assert "no scored test record in common: 0" in capsys.readouterr().out
