"""Plots that draw with no network: DVC's plot pages, dvc.yaml's plots as pictures, versions' loss curves overlaid.

`dvc plots show` and `dvc plots diff` write a page that loads Vega, Vega-Lite and vega-embed from a
CDN, so offline it stays blank. `write_page_template` writes a page template with those scripts
inlined from the installed vl-convert-python package (never fetched, never committed) to
.dvc/tmp/plots/ and names it in the git-ignored .dvc/config.local (`plots.html_template`): the
same `dvc plots` commands then draw offline, with SVG marks. Pictures (PNG, SVG) are drawn by
vl-convert itself, Vega in an embedded JavaScript engine: no browser, no network.

Nothing here imports dvc or vl_convert at module level; `versions` arguments are loravc.versions.catalogue.Versions.
"""

import csv
import io
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError

VL_VERSION = "5.21"  # the Vega-Lite that DVC's plot templates are written for (their $schema: v5)
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
TEMPLATE = "tmp/plots/offline.html"  # relative to .dvc/, as DVC reads plots.html_template; DVC's scratch folder
SUFFIXES = (".png", ".svg")
PALETTE = ["#945dd6", "#13adc7", "#f46837", "#48bb78", "#4299e1", "#ed8936", "#f56565"]  # DVC's revision colours
CURVES = {"training": "metrics/loss.tsv", "validation": "metrics/eval/loss.tsv"}  # in the train stage's plots dir

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- LIBRARIES, inlined: this page needs no network -->
    <script>BUNDLE</script>
    <script>
        (() => {  // DVC's plot divs call vegaEmbed(id, spec): SVG whatever vega-embed's default, marks in the page
            const embed = window.vegaEmbed;
            window.vegaEmbed = Object.assign((el, spec, opts) => embed(el, spec, { renderer: "svg", ...opts }), embed);
        })();
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
        .vega-bind {
            font: 12px sans-serif;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


# --- DVC's pages, offline ---------------------------------------------------------------------------
def page_template() -> str:
    """A DVC plots page template (`dvc plots show --html-template`) with Vega inlined and SVG rendering.

    It has DVC's `{plot_divs}` and `{refresh_tag}` placeholders but no `{scripts}`, where DVC would put its CDN tags.
    """
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VL_VERSION)
    if "</script" in bundle.lower() or "{plot_divs}" in bundle:  # would end the tag early or take DVC's plots
        raise UserError(f"the JavaScript bundle of vl-convert-python {vl_convert.__version__} cannot be inlined")
    libraries = (
        f"Vega {vl_convert.get_vega_version()}, Vega-Lite {VL_VERSION} and vega-embed "
        f"{vl_convert.get_vega_embed_version()} from vl-convert-python {vl_convert.__version__}"
    )
    return PAGE.replace("LIBRARIES", libraries).replace("BUNDLE", bundle)


def write_page_template(start: Path) -> Path:
    """Write the offline template into the DVC repository holding `start` and name it in .dvc/config.local.

    Both are git-ignored: a clone without them draws DVC's usual (online) page. Returns the template's path.
    """
    from dvc.config import Config
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        root = Path(Repo.find_root(str(start)))
    except NotDvcRepoError:
        raise UserError(
            f"{start} is in no DVC repository (no .dvc/ above it): run this in the project's clone"
        ) from None
    dvc_dir = root / ".dvc"
    path = dvc_dir / TEMPLATE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(page_template(), encoding="utf-8")
    partial.replace(path)
    with Config(dvc_dir=str(dvc_dir), validate=False).edit("local") as config:
        config["plots"]["html_template"] = TEMPLATE
    return path


# --- pictures ---------------------------------------------------------------------------------------
def dvc_specs(root: Path) -> dict[str, dict[str, Any]]:
    """{plot id: Vega-Lite spec} of dvc.yaml's top-level `plots`, filled with the workspace's files as
    `dvc plots show` fills them (DVC's templates, titles, axes, colours). Plots whose files are all missing
    are left out; a bad definition is a UserError. Takes no DVC lock: it runs inside `dvc repro`."""
    from dvc.render.match import match_defs_renderers
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        matched = match_defs_renderers(repo.plots.show(), templates_dir=repo.plots.templates_dir)
    specs = {}
    for found in matched:
        if found.definition_errors:
            plot_id, err = next(iter(found.definition_errors.items()))
            raise UserError(f"dvc.yaml plot {plot_id!r} cannot be drawn: {err}")
        if found.renderer.datapoints:
            specs[found.renderer.name] = found.renderer.get_filled_template()
    return specs


def check_suffix(path: Path) -> None:
    if path.suffix not in SUFFIXES:
        raise UserError(f"{path}: a picture is written as .png or .svg, not {path.suffix or 'a file without suffix'}")


def save(spec: dict[str, Any], path: Path) -> None:
    """Draw a Vega-Lite spec to `path`, PNG or SVG by its suffix; the spec's data must be inline (no URL is read)."""
    import vl_convert

    check_suffix(path)
    options: dict[str, Any] = {"vl_version": VL_VERSION, "allowed_base_urls": []}
    try:
        if path.suffix == ".png":
            data = vl_convert.vegalite_to_png(spec, scale=1, **options)
        else:
            data = vl_convert.vegalite_to_svg(spec, **options).encode()
    except ValueError as err:  # vl-convert's errors: a spec it cannot compile or draw
        raise UserError(f"cannot draw {path.name}: {err}") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None


# --- versions' loss curves in one picture -----------------------------------------------------------
def read_curve(raw: bytes, name: str) -> list[tuple[float, float]]:
    """(step, loss) points of a dvclive TSV file (columns `step` and `loss`); `name` for the error message."""
    try:
        rows = csv.DictReader(io.StringIO(raw.decode("utf-8")), delimiter="\t")
        return [(float(row["step"]), float(row["loss"])) for row in rows]
    except (UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{name} is not a dvclive step/loss TSV file ({err!r})") from None


def version_curves(versions: Any, version: Any) -> dict[str, list[tuple[float, float]]]:
    """{"training": points, "validation": points} of a version, read from DVC's cache at its commit.

    The validation curve is left out if the version has none (no validation split); a version whose
    dvc.lock pins no training curves (trained before they were a DVC output) is a UserError.
    """
    out = version.pins.train_plots
    if out is None:
        raise UserError(
            f"{version.label} has no training curves in DVC: its dvc.lock pins no `plots` output of stage `train` "
            "(it predates them); choose a later version"
        )
    curves = {}
    for curve, file in CURVES.items():  # training first: its read fetches the manifest if missing
        if curve == "training" or file in versions.cache.recorded_md5(out):
            raw, _ = versions.cache.read_file(version.rev, out, file)
            curves[curve] = read_curve(raw, f"{out.path}/{file} at {version.short}")
    return curves


def overlay_spec(curves: dict[str, dict[str, list[tuple[float, float]]]]) -> dict[str, Any]:
    """A Vega-Lite spec of every version's loss curves: one colour per version (legend: its label), training
    loss solid, validation loss dashed with a point per evaluation. `curves`: {label: version_curves(...)}."""
    labels = list(curves)
    rows = [
        {"version": label, "curve": curve, "step": step, "loss": loss}
        for label, by_curve in curves.items()
        for curve, points in by_curve.items()
        for step, loss in points
    ]
    colour = {
        "field": "version",
        "type": "nominal",
        "title": "version",
        "sort": labels,
        "scale": {"domain": labels, "range": PALETTE},
        "legend": {"labelLimit": 400},  # whole labels: `abc1234 (main, lora-adapter#prod)`
    }
    dash = {
        "field": "curve",
        "type": "nominal",
        "title": "loss",
        "scale": {"domain": list(CURVES), "range": [[1, 0], [6, 4]]},
    }
    return {
        "$schema": SCHEMA,
        "title": "Loss by version (training per logged step, validation after each epoch)",
        "width": 480,
        "height": 300,
        "data": {"values": rows},
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": "step"},
            "y": {"field": "loss", "type": "quantitative", "title": "loss", "scale": {"zero": False}},
            "color": colour,
        },
        "layer": [
            {
                "mark": {"type": "line", "strokeWidth": 2},
                "encoding": {"strokeDash": dash, "detail": {"field": "curve"}},
            },
            {
                "transform": [{"filter": "datum.curve === 'validation'"}],
                "mark": {"type": "point", "filled": True, "size": 50, "opacity": 1},
            },
        ],
    }


def draw_versions(versions: Any, refs: list[str], path: Path) -> list[Any]:
    """Overlay the loss curves of the versions `refs` name in one picture at `path` (.png or .svg).

    Returns the versions drawn, in the order given; naming one version (one adapter) twice is a UserError.
    """
    check_suffix(path)
    found: dict[str, Any] = {}  # by adapter hash
    for ref in refs:
        version = versions.resolve(ref)
        same = found.get(version.pins.adapter.md5)
        if same is not None:
            raise UserError(f"{ref!r} is {same.label} again (the same adapter): give each version once")
        found[version.pins.adapter.md5] = version
    curves = {version.label: version_curves(versions, version) for version in found.values()}
    save(overlay_spec(curves), path)
    return list(found.values())
