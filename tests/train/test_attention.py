"""loravc.train.attention: a packed row attended one example at a time equals transformers' sdpa over the row."""

from pathlib import Path

import pytest

from loravc.train import attention


def _models(tiny_model_dir: Path) -> tuple:
    import torch
    from transformers import AutoModelForCausalLM

    load = AutoModelForCausalLM.from_pretrained
    sdpa = load(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    varlen = load(tiny_model_dir, dtype=torch.float32, attn_implementation=attention.register())
    return sdpa, varlen


def _packed(vocab: int) -> dict:
    """Three examples of 15, 20 and 5 tokens in one row, as TRL's padding-free collator passes them."""
    import torch

    lengths = [15, 20, 5]
    ids = (torch.arange(sum(lengths)).unsqueeze(0) * 7 + 3) % vocab
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    cu = torch.tensor([0, 15, 35, 40], dtype=torch.int32)
    return {"input_ids": ids, "position_ids": positions, "use_cache": False, "cu_seq_lens_q": cu, "cu_seq_lens_k": cu}


@pytest.mark.parametrize("math_scores", [attention.MATH_SCORES, 0], ids=["reference-kernel", "fused-kernel"])
def test_a_packed_row_gives_sdpas_logits_and_gradients(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, math_scores: int
) -> None:
    import torch

    monkeypatch.setattr(attention, "MATH_SCORES", math_scores)
    sdpa, varlen = _models(tiny_model_dir)
    batch = _packed(sdpa.config.vocab_size)
    plain = {k: v for k, v in batch.items() if not k.startswith("cu_")}  # sdpa reads the packing from positions
    expected, found = sdpa(**plain).logits, varlen(**batch).logits
    assert torch.allclose(found, expected, atol=1e-5)
    expected.square().sum().backward()
    found.square().sum().backward()
    weight = "model.layers.0.self_attn.q_proj.weight"
    grads = [dict(m.named_parameters())[weight].grad for m in (sdpa, varlen)]
    assert torch.allclose(grads[0], grads[1], atol=1e-4, rtol=1e-4) and grads[0].abs().sum() > 0
    # the examples do not see each other: the third alone gives the same logits
    alone = varlen(input_ids=batch["input_ids"][:, 35:], use_cache=False).logits
    assert torch.allclose(found[:, 35:], alone, atol=1e-5)


def test_batches_that_are_not_one_packed_row_go_to_sdpa_unchanged(tiny_model_dir: Path) -> None:
    import torch

    sdpa, varlen = _models(tiny_model_dir)
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        expected = sdpa(input_ids=ids, attention_mask=mask).logits
        assert torch.equal(varlen(input_ids=ids, attention_mask=mask).logits, expected)


def test_trl_collated_rows_with_grouped_heads_and_a_padded_tail(tiny_model_dir: Path) -> None:
    """SmolLM2's layout (3 query heads per key/value head) on a row TRL's padding-free collator made, padded to 8."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    config = AutoConfig.from_pretrained(tiny_model_dir, num_attention_heads=3, num_key_value_heads=1, head_dim=8)
    torch.manual_seed(0)
    sdpa = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    varlen = AutoModelForCausalLM.from_config(config, attn_implementation=attention.register()).eval()
    varlen.load_state_dict(sdpa.state_dict())
    examples = [{"input_ids": list(range(5, 5 + n))} for n in (7, 12, 4)]  # 23 tokens, padded to 24
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True, pad_to_multiple_of=8)(examples)
    assert batch["input_ids"].shape == (1, 24) and batch["cu_seq_lens_q"].tolist()[-2:] == [23, 24]
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k")}
    with torch.no_grad():
        found = varlen(**inputs, use_cache=False).logits
        expected = sdpa(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    assert torch.allclose(found[:, :23], expected[:, :23], atol=1e-5)  # the pad token's logits are never scored


def test_spans_that_do_not_cover_the_row_or_a_sliding_window_go_to_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers.integrations import sdpa_attention

    calls: list[bool] = []
    monkeypatch.setattr(
        sdpa_attention,
        "sdpa_attention_forward",
        lambda m, q, k, v, mask, **kw: calls.append(mask is None) or (q.transpose(1, 2), None),
    )
    q = torch.zeros(1, 2, 10, 4)
    module = torch.nn.Module()
    attention.varlen_sdpa(module, q, q, q, "mask", cu_seq_lens_q=torch.tensor([0, 4, 8]))  # 8 of 10 tokens
    attention.varlen_sdpa(module, q, q, q, "mask", cu_seq_lens_q=torch.tensor([0, 4, 10]), sliding_window=3)
    assert calls == [False, False]  # each went whole, with the model's mask
    attention.varlen_sdpa(module, q, q, q, "mask", cu_seq_lens_q=torch.tensor([0, 4, 10]))
    assert calls == [False, False, True, True]  # one call per span, causal, no mask
