import math
import statistics

import pytest

from loravc.core.errors import UserError
from loravc.evaluate import scoring


def test_exact_match_ignores_case_and_whitespace_only() -> None:
    assert scoring.exact_match("  The  ANSWER\n", "the answer") == 100.0
    assert scoring.exact_match("the answer.", "the answer") == 0.0  # punctuation counts
    assert scoring.exact_match("", "") == 100.0


def test_token_f1_is_the_bag_of_words_f1() -> None:
    # answer "a b c d", reference "a b e": 2 common, precision 2/4, recall 2/3 -> F1 = 4/7
    assert scoring.token_f1("a b c d", "A B e") == pytest.approx(100 * 4 / 7)
    assert scoring.token_f1("a a", "a") == pytest.approx(100 * 2 / 3)  # a repeated token counts once in common
    assert scoring.token_f1("x", "y") == 0.0 and scoring.token_f1("", "y") == 0.0 and scoring.token_f1("", "") == 100


def test_chrf_is_sacrebleus_sentence_chrf() -> None:
    from sacrebleu.metrics import CHRF

    answer, reference = "the cat sat on a mat", "the cat sat on the mat"
    assert scoring.chrf(answer, reference) == CHRF().sentence_score(answer, [reference]).score
    assert scoring.chrf(reference, reference) == 100.0 and 0 < scoring.chrf(answer, reference) < 100


def test_unknown_metric_names_the_key_and_the_choices() -> None:
    with pytest.raises(UserError, match=r"evaluate\.metrics: unknown metric 'bleu'; the metrics are exact_match, f1"):
        scoring.check_metrics(["exact_match", "bleu"])


def test_paired_bootstrap_interval_is_seeded_and_covers_the_mean_gain() -> None:
    base = [0.0] * 20 + [100.0] * 20
    tuned = [100.0] * 35 + [0.0] * 5  # 20 records gained, 5 lost: +37.5 points on average
    one = scoring.paired_bootstrap(base, tuned, samples=2000, seed=1)
    assert one == scoring.paired_bootstrap(base, tuned, samples=2000, seed=1)
    assert one.delta == 37.5 and one.low < 37.5 < one.high and one.excludes_zero()
    # about mean +- 1.96 standard errors of the paired differences (normal approximation)
    diffs = [b - a for a, b in zip(base, tuned, strict=True)]
    half = 1.96 * statistics.pstdev(diffs) / math.sqrt(len(diffs))
    assert one.low == pytest.approx(37.5 - half, abs=4) and one.high == pytest.approx(37.5 + half, abs=4)
    # the same gain on a quarter of the records is not told from zero
    assert not scoring.paired_bootstrap(base[::4], tuned[::4], samples=2000, seed=1).excludes_zero()
    varied_a, varied_b = [float(i % 7) for i in range(30)], [float(i % 5) * 1.3 for i in range(30)]
    seeded = scoring.paired_bootstrap(varied_a, varied_b, seed=1)
    assert seeded != scoring.paired_bootstrap(varied_a, varied_b, seed=2)  # the seed is used


def test_identical_scores_give_a_zero_width_interval_and_mismatched_lengths_fail() -> None:
    same = scoring.paired_bootstrap([10.0, 20.0, 30.0], [10.0, 20.0, 30.0])
    assert (same.delta, same.low, same.high, same.excludes_zero()) == (0.0, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="same records"):
        scoring.paired_bootstrap([1.0], [1.0, 2.0])
