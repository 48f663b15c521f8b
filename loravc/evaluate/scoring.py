"""Task metrics per test record (exact match, token F1, chrF) and paired bootstrap intervals.

Every score is on a 0-100 scale and is computed per record, so that two models answering the same
records can be compared record by record (a paired bootstrap), which is what tells a real gain from
noise on a few dozen test records. chrF is sacrebleu's sentence-level chrF (character n-gram F-score).
"""

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loravc.core.errors import UserError


def normalize(text: str) -> str:
    """Lower case, whitespace collapsed and stripped: what exact match and token F1 compare."""
    return re.sub(r"\s+", " ", text).strip().lower()


def exact_match(answer: str, reference: str) -> float:
    return 100.0 if normalize(answer) == normalize(reference) else 0.0


def token_f1(answer: str, reference: str) -> float:
    """F1 of the answer's and reference's whitespace tokens as bags (SQuAD's token F1), after normalize."""
    got, want = normalize(answer).split(), normalize(reference).split()
    if not got or not want:
        return 100.0 if got == want else 0.0
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 100.0 * 2 * precision * recall / (precision + recall)


def chrf(answer: str, reference: str) -> float:
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(answer, [reference]).score


METRICS: dict[str, Callable[[str, str], float]] = {"exact_match": exact_match, "f1": token_f1, "chrf": chrf}


def check_metrics(names: Sequence[str], key: str = "evaluate.metrics") -> None:
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise UserError(f"{key}: unknown metric {', '.join(map(repr, unknown))}; the metrics are {', '.join(METRICS)}")


def score(answer: str, reference: str, names: Sequence[str]) -> dict[str, float]:
    return {name: round(METRICS[name](answer, reference), 4) for name in names}


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class Interval:
    """`delta` = mean(b) - mean(a) over paired records, with a percentile bootstrap interval."""

    delta: float
    low: float
    high: float
    records: int
    level: float = 0.95

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, samples: int = 1000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Resample record indices with replacement `samples` times (seeded: the same inputs give the same
    interval) and take the percentiles of mean(b - a): the interval of b's gain over a on records like these."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same records: {len(a)} vs {len(b)}")
    import numpy as np

    diffs = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if diffs.size == 0:
        return Interval(0.0, 0.0, 0.0, 0, level)
    resampled = np.random.default_rng(seed).integers(0, diffs.size, size=(samples, diffs.size))
    means = diffs[resampled].mean(axis=1)
    low, high = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return Interval(round(float(diffs.mean()), 4), round(float(low), 4), round(float(high), 4), int(diffs.size), level)


def compare_answers(a: list[dict], b: list[dict], *, samples: int = 1000, seed: int = 0) -> dict[str, object]:
    """Two versions' tuned answers to the test records both answered (paired by record id): each metric's
    mean for A and B on those records and B - A with its paired bootstrap interval. Rows are
    the records of reports/predictions.json."""
    by_id = {row["id"]: row for row in b}
    common = [(row, by_id[row["id"]]) for row in a if row["id"] in by_id]
    names = [n for n in METRICS if common and all(n in x["tuned"] and n in y["tuned"] for x, y in common)]
    metrics = {}
    for name in names:
        xs, ys = [x["tuned"][name] for x, _ in common], [y["tuned"][name] for _, y in common]
        gain = paired_bootstrap(xs, ys, samples=samples, seed=seed)
        metrics[name] = {"a": round(mean(xs), 4), "b": round(mean(ys), 4), "b_minus_a": gain.delta}
        metrics[name] |= {"low": gain.low, "high": gain.high}
    return {"records": len(common), "only_a": len(a) - len(common), "only_b": len(b) - len(common)} | {
        "metrics": metrics
    }
