"""Format `merged`: what `loravc merge` prints."""

from loravc.export import merged


def test_merge_says_when_a_qlora_version_merged_into_the_full_precision_base() -> None:
    record = {
        "merged_from": {"version_id": "v_1", "rev": "abcdef0123"},
        "logits_check": {"max_abs_difference": 2.0e-6, "tolerance": 1.0e-4},
    }
    assert merged.summary(record | {"trained_on_bits": None}, "out").startswith(
        "merged v_1 (abcdef0) into its base -> out"
    )
    qlora = merged.summary(record | {"trained_on_bits": 4}, "out")
    assert qlora.startswith("merged v_1 (abcdef0) into its full-precision base (it trained on the 4-bit one) -> out")
