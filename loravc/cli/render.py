"""What the `loravc` verbs print: pure functions from the records the library returns to text."""

import json
from typing import Any

from loravc.core import recipe

LIST_HEADER = ["revision", "experiment", "registry", "version", "created (UTC)", "base model", "data", "r"]
LIST_HEADER += ["recipe", "val loss", "test ppl", "remote"]
REMOTES_DOC = "docs/remotes.md"
NO_VERSIONS = "no versions yet: run `dvc repro` and commit dvc.lock (or `dvc exp run`)"


def table(rows: list[list[str]], header: list[str] | None = None) -> str:
    """Left-aligned columns two spaces apart, trailing blanks removed."""
    rows = [header, *rows] if header else rows
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def number(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def created(value: str | None) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM`."""
    return "-" if not value else value.replace("T", " ")[:16]


def indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def refs_of(row: dict[str, Any]) -> list[str]:
    return [*row["branches"], *row["tags"], *row["experiments"], *row["registry"]]


def revision_label(row: dict[str, Any]) -> str:
    """`abc1234 (main, lora-adapter#prod)`."""
    refs = refs_of(row)
    return row["rev"][:7] + (f" ({', '.join(refs)})" if refs else "")


def list_table(rows: list[dict[str, Any]]) -> str:
    """`loravc list`: one line per version (Version.row()), newest first."""
    if not rows:
        return NO_VERSIONS
    lines = []
    for row in rows:
        facts = [
            row["version_id"] or "-",
            created(row["created"]),
            str(row["base_model"] or "-"),
            data_label(row["data"]),
            str(row["lora_r"] or "-"),
            recipe.text(row.get("recipe")),
            number(row["validation_loss"], 4),
            number(row["test_perplexity"], 2),
            row.get("remote") or "-",
        ]
        if row["error"]:
            facts = ["(not in the DVC cache: see below)" if row.get("missing") else "(unreadable: see below)"]
            facts += [""] * (len(LIST_HEADER) - 4)
        rev = f"{row['rev'][:7]} {' '.join(row['branches'] + row['tags'])}".strip()
        lines.append([rev, ", ".join(row["experiments"]) or "-", ", ".join(row["registry"]) or "-", *facts])
    return table(lines, LIST_HEADER)


def data_label(data: dict[str, Any] | None) -> str:
    """`data/examples/sums-chat@1a2b3c4d`: the source (`-` before it was recorded) and the splits' sha256."""
    if not data:
        return "-"
    return f"{data.get('source') or '-'}@{data['sha256'][:8]}"


def list_warnings(rows: list[dict[str, Any]], shown: int = 10) -> list[str]:
    """`loravc list`'s stderr: one line per unreadable version, but one line for all the versions that are in
    no DVC cache or remote (per reason they could not be fetched)."""
    lines = [f"warning: {row['error']}" for row in rows if row["error"] and not row.get("missing")]
    by_problem: dict[str, list[str]] = {}
    for row in rows:
        if row["error"] and row.get("missing"):
            by_problem.setdefault(row["missing"], []).append(row["rev"][:7])
    for problem, revs in by_problem.items():
        more = f" and {len(revs) - shown} more" if len(revs) > shown else ""
        count = f"{len(revs)} version is" if len(revs) == 1 else f"{len(revs)} versions are"
        lines.append(
            f"warning: {count} in no DVC cache or remote ({', '.join(revs[:shown])}{more}; {problem}): "
            "run `dvc pull` for the current one, `dvc fetch --all-commits` for all, with the remote that holds them"
        )
    return lines


def remote_notes(check: dict[str, Any], rows: list[dict[str, Any]], shown: int = 10) -> list[str]:
    """`loravc list`'s stderr about the DVC remote (loravc.versions.remote's RemoteCheck): none set, not
    reachable, or which versions have files only in this machine's cache."""
    if check["remote"] is None:
        if check["configured"]:
            return [
                f"note: no default DVC remote is set (configured: {', '.join(check['configured'])}), so nothing "
                f"says which versions are pushed: `dvc remote default <name>` ({REMOTES_DOC})"
            ]
        return [
            "note: no DVC remote is set: every version lives only in this machine's DVC cache, one `dvc gc` or "
            f"disk away from gone; set one with `dvc remote add -d storage <url>`, then `dvc push` ({REMOTES_DOC})"
        ]
    if check["problem"]:
        return [f"warning: {check['problem']}: the remote column is unknown"]
    local = [row for row in rows if row.get("remote") == "local only"]
    if not local:
        return []
    revs = [row["rev"][:7] for row in local[:shown]] + [f"and {len(local) - shown} more"] * (len(local) > shown)
    count = f"{len(local)} version has" if len(local) == 1 else f"{len(local)} versions have"
    experiments = [row["experiments"][0] for row in local if row["experiments"] and not row["branches"] + row["tags"]]
    how = ["`dvc push --all-commits` sends those of every commit"] if len(experiments) < len(local) else []
    how += [f"`dvc exp push origin {name}` sends experiment {name}'s" for name in experiments[:shown]]
    return [
        f"warning: {count} files only in this machine's DVC cache, not in DVC remote {check['remote']!r} "
        f"({', '.join(revs)}): {'; '.join(how)} ({REMOTES_DOC})"
    ]


def gc_kept(kept: dict[str, Any]) -> str:
    """`loravc gc`'s first lines: what it keeps (loravc.versions.cleanup.kept), each version on its own line."""

    def some(names: list[str], one: str, many: str) -> str:
        listed = f": {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}" if names else ""
        return f"{len(names)} {one if len(names) == 1 else many}{listed}"

    lines = [
        f"keeping the DVC files of the workspace and of {kept['commits']} commits, "
        f"{some(kept['branches'], 'branch', 'branches')}; {some(kept['tags'], 'tag', 'tags')}; "
        f"{some(kept['experiments'], 'experiment', 'experiments')}",
        f"that is every version, {len(kept['versions'])}:",
    ]
    rows = [[v["label"], v["version_id"] or "(unreadable: see `loravc list`)"] for v in kept["versions"]]
    return "\n".join(lines + ([indent(table(rows))] if rows else []))


def lora_line(lora: dict[str, Any]) -> str:
    ranks = "/".join(map(str, lora["ranks"]))
    line = (
        f"r={ranks} alpha={lora['alpha']} on {', '.join(lora['target_modules'])} "
        f"({lora['modules']} modules, {lora['trainable_parameters']:,} trainable parameters)"
    )
    kinds = [text for text in (variant(lora), saved_modules(lora)) if text != "-"]
    return "; ".join([line, *kinds])


def variant(lora: dict[str, Any]) -> str:
    """rsLoRA and DoRA as read from the adapter (its config and magnitude vectors); "-" for plain LoRA."""
    parts = ["rsLoRA"] if lora.get("use_rslora") else []
    if dora := lora.get("dora"):
        parts.append(
            f"DoRA magnitude mean {dora['magnitude_mean']:.4g} "
            f"[{dora['magnitude_min']:.4g}, {dora['magnitude_max']:.4g}] over {dora['modules']} modules"
        )
    return ", ".join(parts) or "-"


def saved_modules(lora: dict[str, Any]) -> str:
    saved = lora.get("modules_to_save") or {}
    return ", ".join(f"whole {name} ({size:,} B)" for name, size in saved.items()) or "-"


def show(info: dict[str, Any]) -> str:
    """`loravc show`: the record loravc.versions.inspection.describe returns."""
    refs = refs_of(info)
    base = f"  ({info['base']['path']}, dvc md5 {info['base']['md5']})" if info["base"] else ""  # none in dvc.lock
    lines = [
        ["version", str(info["version_id"])],
        ["revision", info["rev"] + (f"  ({', '.join(refs)})" if refs else "")],
        ["created", created(info["created"]) + " UTC"],
        ["adapter", f"{info['adapter']['path']} (dvc md5 {info['adapter']['md5']})"],
        ["base model", f"{info['base_model']}{base}"],
        ["lora weights", lora_line(info["lora_weights"])],
        ["val loss", number(info["validation_loss"], 4)],
        ["test ppl", number(info["test_perplexity"], 4)],
        *lock_rows((info["metadata"] or {}).get("lock"), info.get("environment_lock")),
    ]
    metrics = table([[k, str(v)] for k, v in info["metrics"].items()]) if info["metrics"] else "(none)"
    params = table([[k, json.dumps(v)] for k, v in info["params"].items()]) if info["params"] else "(none)"
    return "\n".join(
        [
            table(lines),
            "\nmetrics",
            indent(metrics),
            "\nparams (dvc.lock)",
            indent(params),
            "\nmetadata.json",
            indent(json.dumps(info["metadata"], indent=2)),
        ]
    )


def lock_rows(made: dict[str, str] | None, here: dict[str, str] | None) -> list[list[str]]:
    """`show`'s lock: the locks (file and sha256) that set up the environment that trained the version, and a note
    when this environment was set up from other ones. "-" for versions made before metadata.json recorded it."""
    if not made:
        return [["lock", "-"]]
    rows = [["lock", locks_text(made)]]
    if here is not None and here != made:
        rows.append(["", f"made under another lock than this environment's ({locks_text(here)}): libraries may differ"])
    return rows


def locks_text(locks: dict[str, str]) -> str:
    return ", ".join(f"{name} sha256 {sha[:12]}" for name, sha in sorted(locks.items()))


def compare(result: dict[str, Any], ref_a: str, ref_b: str) -> str:
    """`loravc compare`: the record loravc.versions.inspection.compare returns, A and B side by side."""
    a, b = result["a"], result["b"]
    la, lb = a["lora_weights"], b["lora_weights"]

    def per_target(lora: dict[str, Any]) -> str:
        return ", ".join(f"{t}={'/'.join(map(str, r))}" for t, r in lora["rank_per_target"].items())

    def both(fn: Any) -> list[str]:
        return [fn(la), fn(lb)]

    rows = [
        ["", f"A: {ref_a}", f"B: {ref_b}", ""],
        ["revision", revision_label(a), revision_label(b)],
        ["version", str(a["version_id"]), str(b["version_id"])],
        ["created (UTC)", created(a["created"]), created(b["created"])],
        ["base model", str(a["base_model"]), str(b["base_model"])],
        ["data", "", "", "" if a["data"] == b["data"] else "differs"],
        *[[f"  {label}", *(_data_value(info, key) for info in (a, b))] for key, label in DATA_ROWS],
        ["LoRA, from the weights", "", ""],
        ["  rank per module", *both(per_target)],
        ["  modules", *both(lambda lora: str(lora["modules"]))],
        ["  target modules", *both(lambda lora: ", ".join(lora["target_modules"]))],
        ["  alpha", *both(lambda lora: str(lora["alpha"]))],
        ["  scaling", *both(lambda lora: "/".join(map(str, lora["scaling"])))],
        ["  variant", *both(variant)],
        ["  whole modules", *both(saved_modules)],
        ["  trainable params", *both(lambda lora: f"{lora['trainable_parameters']:,}")],
        ["  weight dtype", *both(lambda lora: "/".join(lora["dtypes"]))],
        ["  adapter file", *both(lambda lora: f"{lora['adapter_bytes']:,} B")],
        ["params that differ", "", "", ""],
        *[[f"  {k}", json.dumps(x), json.dumps(y)] for k, (x, y) in result["params"].items()],
        *([] if result["params"] else [["  (none)", "", ""]]),
        ["metrics that differ", "", "", "B - A"],
        *[[f"  {k}", metric(x), metric(y), change(x, y)] for k, (x, y) in result["metrics"].items()],
        *task_rows(result.get("task")),
    ]
    return table([row + [""] * (4 - len(row)) for row in rows])


def task_rows(task: dict[str, Any] | None) -> list[list[str]]:
    """The fine-tuned answers of A and B on the test records both answered, paired: B - A and its 95% interval."""
    if task is None:
        return [["task scores", "(a version has no reports/predictions.json)", "", ""]]
    if not task["metrics"]:
        return [["task scores", f"(no scored test record in common: {task['records']})", "", ""]]
    head = f"task scores, {task['records']} shared test records"
    rows = [[head, "", "", "B - A [95% interval]"]]
    for name, m in task["metrics"].items():
        rows.append(
            [
                f"  {name}",
                f"{m['a']:.1f}",
                f"{m['b']:.1f}",
                f"{m['b_minus_a']:+.1f} [{m['low']:+.1f}, {m['high']:+.1f}]",
            ]
        )
    if task["only_a"] or task["only_b"]:
        rows.append([f"  (not shared: {task['only_a']} only in A, {task['only_b']} only in B)", "", ""])
    return rows


DATA_ROWS = [
    ("source", "source"),
    ("shape", "shape"),
    ("fixed_test", "fixed test file"),
    ("train_records", "train records"),
    ("validation_records", "validation records"),
    ("sha256", "splits sha256"),
]


def _data_value(info: dict[str, Any], key: str) -> str:
    value = metric((info["data"] or {}).get(key))
    return value[:16] if key == "sha256" else value  # enough to tell them apart; --json has it whole


def change(a: Any, b: Any) -> str:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return f"{b - a:+.6g}" if numbers else ""


def metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def verify(report: dict[str, Any]) -> str:
    """`loravc verify`: one `ok` line per check that passed (a failed check raised before this)."""
    lines = [f"verify {report['version_id']} ({report['rev'][:7]})"]
    for path, check in report["files"].items():
        lines.append(f"  ok  {path}: {check['files']} files hash to {check['found']}, as dvc.lock records")
    loads = report["loads"]
    lines.append(f"  ok  loads on {loads['device']}: finite logits for a {loads['probe_tokens']}-token probe")
    if "eval" in report:
        e = report["eval"]
        lines.append(
            f"  ok  test perplexity {e['measured']} vs recorded {e['recorded']} "
            f"(difference {e['relative_difference']:.2e} <= {e['tolerance']:.0e} relative)"
        )
    if "task" in report:
        t = report["task"]
        scores = ", ".join(f"{n} {m['measured']:.1f} vs recorded {m['recorded']:.1f}" for n, m in t["metrics"].items())
        lines.append(
            f"  ok  task answers to {t['records']} test prompts: {scores} ({t['identical_answers']} identical)"
        )
    return "\n".join(lines)


def verify_cache(report: dict[str, Any]) -> str:
    """`loravc verify --all`: one line per version, under it one per damaged cache file, then the counts."""
    rows, damage = [], []
    for record in report["versions"]:
        what = f"{record['path']}: {record['files']} files"
        if record["status"] == "missing":
            absent = len(record["missing"])
            what = f"{record['path']}: not in the local DVC cache"
            what += f" ({absent} of {record['files']} files)" if record["files"] else ""
        rows.append([record["status"], record["label"], record["version_id"] or "-", what])
        damage.append(
            [f"      {record['path']}/{bad['file']}: cache file {bad['cache']} hashes to {bad['found']}, "
             f"not the recorded {bad['recorded']}" for bad in record["damaged"]]
        )  # fmt: skip
    lines = [f"verify --all: the adapter directory of {report['checked']} versions, rehashed in the local DVC cache"]
    if rows:
        for line, bad in zip(table(rows).splitlines(), damage, strict=True):
            lines += ["  " + line, *bad]
    lines.append(
        f"{report['checked']} checked: {report['ok']} ok, {report['damaged']} damaged, "
        f"{report['missing']} not in the local cache (not damage: `dvc fetch --all-commits` gets them)"
    )
    return "\n".join(lines)
