"""The docs a newcomer reads: a short README, and every relative link and #anchor in it and in docs/ leads somewhere."""

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # [text](target); images are links too, but to files
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation but `-` and `_` dropped, spaces as `-`, repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", page.read_text(encoding="utf-8")), re.M):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def broken(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    name = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page
    problems = []
    for target in LINK.findall(text) + IMAGE.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:, file: ... not checked offline
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{name}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{name}: {target}: no heading with that anchor in {dest.name}")
    return problems


def test_headings_give_githubs_anchors(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("# Quick start\n## GPU: a `dvc` page (fast)\n## Quick start\n```\n# not a heading\n```\n")
    assert anchors(page) == {"quick-start", "gpu-a-dvc-page-fast", "quick-start-1"}
    page.write_text("[a](p.md#quick-start) [b](#gpu) [c](nowhere.md) ![d](x.png) [e](https://dvc.org)\n# Quick start\n")
    assert broken(page) == [
        f"{page}: #gpu: no heading with that anchor in p.md",
        f"{page}: nowhere.md: no such file",
        f"{page}: x.png: no such file",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_leads_somewhere(page: Path) -> None:
    assert broken(page) == []


def test_the_readme_is_a_front_door() -> None:
    """At most 150 lines, with the two commands (set up and run; set up and test) within its first 20."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    first = "\n".join(lines[:20])
    assert "bash scripts/setup.sh && . .venv/bin/activate && dvc repro" in first
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci in first  # the test command CI runs is the README's


def test_the_readme_summary_is_the_pinned_versions_committed_record() -> None:
    """The block under "The pinned default ends with:" is what evaluate prints for the version dvc.lock pins, from
    its metadata (tests/fixtures/metadata) and the committed metrics: a re-pin that forgets the README fails here."""
    from loravc.core.metadata import VersionMetadata
    from loravc.core.schema import parse_yaml, read_yaml
    from loravc.evaluate.evaluation import summary_text
    from loravc.versions.pins import parse_pins

    pins = parse_pins(read_yaml(ROOT / "dvc.yaml"), read_yaml(ROOT / "dvc.lock"))
    fixture = ROOT / "tests" / "fixtures" / "metadata" / f"{pins.adapter.md5.removesuffix('.dir')}.json"
    meta = VersionMetadata.from_dict(json.loads(fixture.read_text(encoding="utf-8")))
    metrics = json.loads((ROOT / "dvclive" / "evaluate" / "metrics.json").read_text(encoding="utf-8"))
    ppl = {
        who: {"perplexity": metrics[f"{who}_perplexity"], "tokens": metrics[f"{who}_tokens"]}
        for who in ("base", "tuned")
    }
    scores = parse_yaml((ROOT / "params.yaml").read_text(encoding="utf-8"))["evaluate"]["metrics"]
    paths = {"adapter": Path("models/adapter"), "predictions": Path("reports/predictions.json")}
    paths["samples"] = Path("reports/samples.md")
    expected = summary_text(meta, paths, ppl, meta.training.loss_on, scores, metrics, {})
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"ends with:\n\n```\n{expected}\n```" in readme
