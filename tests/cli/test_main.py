"""The `loravc` command: every verb, its output, its start-up cost and its errors."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from conftest import ROOT, greedy_ids, sha256_tree

from loravc.cli.main import main, parser, run
from loravc.export.use import load_version

VERBS = ("list", "show", "compare", "export", "card", "merge", "generate", "verify", "plots", "register", "promote")
VERBS += ("tune",)
HEAVY = ("torch", "transformers", "peft", "trl", "optuna")


def loravc(repo: Path, *args: str) -> None:
    main(["-C", str(repo), *args])


def fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the console entry point; it must exit 2 with one `error:` line and no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        run(list(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_console_script_and_module_entry_points() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"loravc": "loravc.cli.main:run"}
    result = subprocess.run([sys.executable, "-m", "loravc", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and all(verb in result.stdout for verb in VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args([verb, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: loravc {verb}")


def test_list_show_compare_and_help_do_not_import_torch(versions_repo: dict) -> None:
    script = f"""
import json, sys, contextlib, io
from loravc.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
    after_help = sorted(m for m in sys.modules if m.split(".")[0] in ("dvc", "gto", *{HEAVY!r}))
    for argv in (["list"], ["show", "main"], ["compare", "main~1", "rank-two"]):
        main(["-C", {str(versions_repo["repo"])!r}, *argv])
print(json.dumps([after_help, sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})]))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    after_help, after_all = json.loads(result.stdout)
    assert after_help == [] and after_all == []


def test_list_prints_every_version_as_a_table_and_as_json(versions_repo: dict, capsys) -> None:
    repo = versions_repo["repo"]
    loravc(repo, "list")
    lines = capsys.readouterr().out.splitlines()
    header = "revision experiment registry version created (UTC) base model data r recipe val loss test ppl remote"
    assert lines[0].split() == header.split()
    assert len(lines) == 4
    row = {line.split()[0]: line for line in lines[1:]}
    assert "rank-two" in row[versions_repo["exp"][:7]]
    main_row = row[versions_repo["r4"][:7]]
    assert "main" in main_row and "lora-adapter@v1.2.0, lora-adapter#prod" in main_row
    loravc(repo, "list", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["lora_r"] for r in rows) == [2, 4, 8] and all(r["test_perplexity"] for r in rows)
    for r in rows:  # every version names its data: the shipped file, and the splits' sha256 on its line
        assert r["data"]["source"] == "data/raw/pydoc_topics.jsonl" and r["data"]["shape"] == "text"
        assert f"data/raw/pydoc_topics.jsonl@{r['data']['sha256'][:8]}" in row[r["rev"][:7]]


def test_show_and_compare(versions_repo: dict, capsys) -> None:
    repo = versions_repo["repo"]
    loravc(repo, "show", "lora-adapter#prod")
    out = capsys.readouterr().out
    assert versions_repo["r4"] in out and "r=4 alpha=16" in out and '"version_id"' in out
    loravc(repo, "show", "rank-two", "--json")
    assert json.loads(capsys.readouterr().out)["lora_weights"]["ranks"] == [2]
    loravc(repo, "compare", "main~1", "rank-two")
    out = capsys.readouterr().out
    rank_line = next(line for line in out.splitlines() if "rank per module" in line)
    assert "q_proj=8" in rank_line and "q_proj=2" in rank_line
    assert any(line.split()[:3] == ["train.lora.r", "8", "2"] for line in out.splitlines())
    assert "dvclive/evaluate/metrics.json:tuned_perplexity" in out


def test_export_generate_merge_and_verify(versions_repo: dict, tmp_path: Path, capsys) -> None:
    repo = versions_repo["repo"]
    loravc(repo, "export", "rank-two", str(tmp_path / "exported"))
    assert "exported v_" in capsys.readouterr().out and (tmp_path / "exported" / "metadata.json").is_file()
    prompt = "The assert statement"
    loravc(repo, "generate", "main", prompt, "--max-new-tokens", "6")
    model, tok = load_version("main", repo=repo)  # the same version, its greedy continuation computed by hand
    continuation = tok.decode(greedy_ids(model, tok, prompt, 6), skip_special_tokens=True)
    assert continuation and capsys.readouterr().out == f"{prompt}{continuation}\n"
    loravc(repo, "merge", "rank-two", str(tmp_path / "merged"))
    assert "logits match base + adapter" in capsys.readouterr().out
    loravc(repo, "verify", "main~1", "--eval")
    out = capsys.readouterr().out
    assert out.count("  ok  ") == 5 and "test perplexity" in out
    fails(capsys, "-C", str(repo), "export", "rank-two", str(tmp_path / "exported"))
    assert sha256_tree(tmp_path / "exported")  # still there, untouched by the refused export


def test_user_errors_exit_2_with_one_clear_line(versions_repo: dict, capsys) -> None:
    repo = str(versions_repo["repo"])
    assert "is not a version reference" in fails(capsys, "-C", repo, "show", "--", "--upload-pack=touch /tmp/x")
    assert "is not a version reference" in fails(capsys, "-C", repo, "export", "../../etc")
    err = fails(capsys, "-C", repo, "compare", "main", "rank-tow")
    assert "nearest: rank-two" in err and "loravc list" in err
    if not torch.cuda.is_available():
        assert "no CUDA device" in fails(capsys, "-C", repo, "generate", "main", "x", "--device", "cuda")
    assert "not inside a git repository" in fails(capsys, "-C", "/", "list")
    assert "loravc list" in fails(capsys, "-C", repo, "show", "no-such-artifact@latest")  # gto: no artifact


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "main", "x", "--device", "tpu"], "--device must be one of"),
        (["generate", "main", "x", "--max-new-tokens", "0"], "must be a positive integer"),
    ],
)
def test_bad_options_are_refused_by_the_parser(args: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_versions_in_no_cache_or_remote_get_one_summary_line(versions_repo: dict, tmp_path: Path, capsys) -> None:
    from tests.versions.test_versions import clone

    repo = str(clone(versions_repo, tmp_path / "clone", remote=False))
    r8, r4 = versions_repo["r8"][:7], versions_repo["r4"][:7]
    main(["-C", repo, "list"])
    out, err = capsys.readouterr()
    assert out.count("(not in the DVC cache: see below)") == 2
    assert err.splitlines()[0] == (
        f"warning: 2 versions are in no DVC cache or remote ({r8}, {r4}; no default DVC remote is configured): "
        "run `dvc pull` for the current one, `dvc fetch --all-commits` for all, with the remote that holds them"
    )
    assert err.splitlines()[1].startswith("note: no DVC remote is set: ") and len(err.splitlines()) == 2
    main(["-C", repo, "verify", "--all"])  # missing is not damage: exit 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("2 checked: 0 ok, 0 damaged, 2 not in the local cache")
    assert out.count("models/adapter: not in the local DVC cache") == 2


def test_verify_takes_a_ref_or_all(versions_repo: dict, capsys) -> None:
    repo = str(versions_repo["repo"])
    assert "verify needs a REF" in fails(capsys, "-C", repo, "verify")
    assert "give no REF and no --eval" in fails(capsys, "-C", repo, "verify", "main", "--all")
    assert "give no REF and no --eval" in fails(capsys, "-C", repo, "verify", "--all", "--eval")


DOC_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
DOC_INLINE = re.compile(r"`([^`\n]+)`")
# a command at a command position: line or span start, after a `$ ` prompt, `&&`, `;`, `|`, `(` or a backtick
DOC_COMMAND = re.compile(
    r"(?:^|[`(;|$]|&&)[ \t]*(?:\S*/)?(loravc|gto)[ \t]+(?:-C[ \t]+\S+[ \t]+)?([a-z][a-z-]*)\b", re.M
)


def documented_commands() -> dict[tuple[str, str], set[str]]:
    """{(command, verb): files} for every `loravc <verb>` and `gto <verb>` in README.md and docs/*.md code."""
    found: dict[tuple[str, str], set[str]] = {}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for snippet in DOC_BLOCK.findall(text) + DOC_INLINE.findall(DOC_BLOCK.sub("", text)):
            for match in DOC_COMMAND.finditer(snippet):
                found.setdefault(match.groups(), set()).add(page.name)
    return found


def test_every_command_the_docs_show_exists() -> None:
    commands = documented_commands()
    assert {("loravc", "list"), ("loravc", "verify"), ("gto", "show")} <= set(commands)  # the scan finds them
    bin_dir = Path(sys.executable).parent  # the venv's console scripts
    broken = []
    for (command, verb), pages in sorted(commands.items()):
        result = subprocess.run([str(bin_dir / command), verb, "--help"], capture_output=True, text=True)
        if result.returncode != 0:
            broken.append(f"`{command} {verb}` in {', '.join(sorted(pages))}: {result.stderr.strip()[-200:]}")
    assert not broken, "\n".join(broken)
