"""Plots with no network: `dvc plots` pages drawn by headless Chromium offline, the report stage's pictures,
and `loravc plots` overlaying versions' loss curves."""

import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from loravc.cli.main import main, run
from loravc.report.plots import PALETTE
from tests.conftest import dvc, git

PURPLE = PALETTE[0]  # DVC's colour of the first revision, and `loravc plots`'s of the first version
SVG_NS = "{http://www.w3.org/2000/svg}"
VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}  # no end tag


# --- headless Chromium, network off -----------------------------------------------------------------
def chromium() -> str:
    """Chromium's path; missing, the test is skipped on a developer's machine and fails in CI (.ci/run installs it)."""
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def offline_dom(page: Path, profile: Path) -> str:
    """The DOM of `page` after its scripts ran in headless Chromium with every network request refused."""
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--proxy-server=127.0.0.1:9",  # nothing listens there: any http(s) request fails
        "--host-resolver-rules=MAP * ~NOTFOUND",  # and no name resolves
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout


class Marks(HTMLParser):
    """The SVG marks in a page, by plot: {id of the enclosing div (DVC's plot id): {mark class: [path d, ...]}}.

    A mark is a <path> inside a Vega mark group (`<g class="mark-line role-mark ...">`): axes, legends
    and titles have other roles and are left out.
    """

    def __init__(self, html: str) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.marks: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_startendtag(tag, attrs)
        if tag not in VOID:
            self.stack.append((tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "path":
            return
        plot = next((a["id"] for t, a in reversed(self.stack) if t == "div" and a.get("id")), None)
        group = next((a.get("class", "").split() for t, a in reversed(self.stack) if t == "g" and a.get("class")), [])
        if plot and "role-mark" in group:
            self.marks[plot][group[0]].append(dict(attrs).get("d") or "")

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return


def drawn(marks: dict[str, list[str]], kind: str) -> int:
    """How many marks of this kind (mark-line, mark-rect) have a non-empty outline."""
    return sum(1 for d in marks.get(kind, []) if re.search(r"\d", d))


def test_offline_pages_draw_every_plot_and_dvcs_own_page_draws_none(built_repo: Path, tmp_path: Path) -> None:
    repo = built_repo
    dvc(repo, "plots", "show", "-o", str(tmp_path / "cdn"))  # DVC's page, before the template exists
    main(["-C", str(repo), "plots", "--template"])
    assert git(repo, "status", "--porcelain") == ""  # template and config are git-ignored: clones never see them
    assert "html_template = tmp/plots/offline.html" in (repo / ".dvc" / "config.local").read_text()
    dvc(repo, "plots", "show", "-o", str(tmp_path / "show"))  # the plain commands now use it
    dvc(repo, "plots", "diff", "HEAD", "-o", str(tmp_path / "diff"))

    cdn = (tmp_path / "cdn" / "index.html").read_text()
    assert 'src="https://cdn.jsdelivr.net/npm/vega' in cdn
    assert Marks(offline_dom(tmp_path / "cdn" / "index.html", tmp_path / "profile")).marks == {}

    for page in ("show", "diff"):
        html = (tmp_path / page / "index.html").read_text()
        assert "<script src=" not in html and "https://cdn" not in html
        marks = Marks(offline_dom(tmp_path / page / "index.html", tmp_path / "profile")).marks
        assert set(marks) == {"loss", "learning_rate", "perplexity"}
        assert drawn(marks["loss"], "mark-line") >= 2  # training and validation curves
        assert drawn(marks["learning_rate"], "mark-line") >= 1
        assert drawn(marks["perplexity"], "mark-rect") == 2 * (2 if page == "diff" else 1)  # base, tuned per rev


# --- pictures ---------------------------------------------------------------------------------------
def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """(width, height, RGBA pixels) of an 8-bit RGBA, non-interlaced PNG: what vl-convert writes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, colour, interlace) == (8, 6, 0)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * 4
    prev, pixels = bytearray(stride), []
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):  # undo the row's filter (PNG spec 9.2)
            a, b, c = line[i - 4] if i >= 4 else 0, prev[i], prev[i - 4] if i >= 4 else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels += [tuple(line[i : i + 4]) for i in range(0, stride, 4)]
        prev = line
    return width, height, pixels


def near(pixels: list[tuple[int, ...]], colour: str, tolerance: int = 12) -> int:
    """How many opaque pixels are within `tolerance` (per channel) of a #rrggbb colour."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return sum(1 for p in pixels if p[3] > 250 and all(abs(p[i] - rgb[i]) <= tolerance for i in range(3)))


def svg_size(svg: str) -> tuple[int, int]:
    root = ET.fromstring(svg)
    return int(root.get("width") or 0), int(root.get("height") or 0)


def test_report_stage_draws_dvc_yaml_plots_as_committed_pictures(built_repo: Path) -> None:
    repo, plots = built_repo, built_repo / "reports" / "plots"
    names = {"loss", "learning_rate", "perplexity"}
    assert set(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["report"]["deps"]) >= {
        "dvclive/train/plots",
        "dvclive/evaluate/plots",
    }
    # the fixture's `dvc repro` drew them and its commit holds them: every version carries its pictures
    committed = git(repo, "ls-files", "reports/plots").split()
    assert sorted(committed) == sorted(f"reports/plots/{n}.{s}" for n in names for s in ("png", "svg"))
    titles = {"loss": "Loss (training per logged step", "learning_rate": "Learning rate", "perplexity": "Test perp"}
    for name in names:
        svg = (plots / f"{name}.svg").read_text()
        assert titles[name] in svg  # dvc.yaml's definition, drawn by DVC's template
        width, height, pixels = png_pixels((plots / f"{name}.png").read_bytes())
        assert (width, height) == svg_size(svg) and width > 300 and height > 300  # the 300x300 plot and its axes
        assert len(set(pixels)) > 50  # text, lines and grid, not a blank or one-colour picture
        assert near(pixels, PURPLE) > (2000 if name == "perplexity" else 150)  # the bars / the curves


def line_marks(svg: str) -> dict[tuple[str, str], tuple[str, str]]:
    """{(version, curve): (stroke colour, dash pattern)} of the line marks of an overlay SVG."""
    found = {}
    for path in ET.fromstring(svg).iter(f"{SVG_NS}path"):
        label = path.get("aria-label") or ""
        if path.get("aria-roledescription") == "line mark" and re.search(r"\d", path.get("d") or ""):
            fields = dict(part.split(": ", 1) for part in label.split("; "))
            found[fields["version"], fields["curve"]] = (path.get("stroke"), path.get("stroke-dasharray"))
    return found


def test_loravc_plots_overlays_versions_one_colour_each(versions_repo: dict, tmp_path: Path, capsys) -> None:
    from loravc.versions.catalogue import Versions

    repo, refs = versions_repo["repo"], ["main~1", "main", "rank-two"]  # LoRA r=8, r=4 and r=2 on the tiny base
    with Versions(repo) as versions:
        labels = [versions.resolve(ref).label for ref in refs]

    main(["-C", str(repo), "plots", *refs, "-o", str(tmp_path / "loss.svg")])
    out = capsys.readouterr().out
    assert out == f"wrote {tmp_path / 'loss.svg'}: training and validation loss of {', '.join(labels)}\n"
    svg = (tmp_path / "loss.svg").read_text()
    marks = line_marks(svg)
    assert set(marks) == {(label, curve) for label in labels for curve in ("training", "validation")}
    for label, colour in zip(labels, PALETTE, strict=False):  # one colour per version, validation dashed
        assert marks[label, "training"] == (colour, "1,0") and marks[label, "validation"] == (colour, "6,4")
    legend = {t.text for t in ET.fromstring(svg).iter(f"{SVG_NS}text")}
    assert set(labels) <= legend

    main(["-C", str(repo), "plots", *refs[:2], "-o", str(tmp_path / "loss.png")])
    width, height, pixels = png_pixels((tmp_path / "loss.png").read_bytes())
    assert width > 480 and height > 300  # the 480x300 plot, its axes and legend
    assert near(pixels, PALETTE[0]) > 100 and near(pixels, PALETTE[1]) > 100 and near(pixels, PALETTE[2]) == 0


def test_loravc_plots_errors_are_one_line(built_repo: Path, capsys) -> None:
    repo = built_repo
    first = git(repo, "rev-parse", "HEAD")
    # a version whose dvc.lock pins no curves (trained before they were a DVC output)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    lock["stages"]["train"]["outs"] = [o for o in lock["stages"]["train"]["outs"] if "plots" not in o["path"]]
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock))
    git(repo, "commit", "-qam", "no curves pinned")
    for argv, message in [
        (["HEAD"], "has no training curves in DVC: its dvc.lock pins no `plots` output of stage `train`"),
        ([first, "HEAD"], "'HEAD' is " + first[:7] + " (main) again (the same adapter): give each version once"),
        ([first, "-o", "loss.txt"], "loss.txt: a picture is written as .png or .svg, not .txt"),
        ([], "plots needs the REFs of the versions to draw"),
        (["--template", first], "give no REF or -o with it"),
        (["--template", "-o", "x.png"], "give no REF or -o with it"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            run(["-C", str(repo), "plots", *argv])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert message in err


def test_a_curve_file_that_is_not_step_loss_tsv_is_named() -> None:
    from loravc.core.errors import UserError
    from loravc.report.plots import read_curve

    assert read_curve(b"step\tloss\n5\t4.25\n10\t2.5\n", "ok") == [(5.0, 4.25), (10.0, 2.5)]
    with pytest.raises(UserError, match=r"^dvclive/train/plots/metrics/loss.tsv at abc1234 is not a dvclive"):
        read_curve(b"step\tvalue\n5\t4.25\n", "dvclive/train/plots/metrics/loss.tsv at abc1234")
