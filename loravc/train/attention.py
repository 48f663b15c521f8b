"""Attention over packed rows, one example at a time, for devices without FlashAttention's varlen kernels.

TRL's padding-free packing puts a step's examples into one row and passes where each one starts
(`cu_seq_lens_q`). transformers' `sdpa` then builds a block-diagonal mask over the whole row and
attends over all of it: for a row of n examples of length L that is (nL)^2 scores, n times the n L^2
that matter. `sdpa_varlen` runs PyTorch's scaled_dot_product_attention on each example's own span,
causal and without a mask (short spans through its reference kernel, faster on a CPU than the fused one);
batches that are not one packed row go to `sdpa` unchanged. The cpu profile uses it (docs/performance.md
has the measured gains).
"""

import itertools
from contextlib import nullcontext
from typing import Any

NAME = "sdpa_varlen"
MATH_SCORES = 2**24  # most attention scores (heads x span^2) of a span that the reference kernel takes


def varlen_sdpa(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    cu_seq_lens_q: Any = None,
    cu_seq_lens_k: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention function signature; query, key, value are (batch, heads, length, head dim)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    length = query.shape[2]
    # one packed row whose spans cover it, attended in full (a sliding window needs the model's own mask)
    packed = cu_seq_lens_q is not None and query.shape[0] == 1 and key.shape[2] == length
    packed = packed and not kwargs.get("sliding_window")
    bounds = cu_seq_lens_q.tolist() if packed else []
    packed = packed and bounds[0] == 0 and bounds[-1] == length
    if packed and cu_seq_lens_k is not None:
        packed = torch.equal(cu_seq_lens_q, cu_seq_lens_k)
    if not packed:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kwargs.pop("is_causal", None)
    parts = []
    for a, b in itertools.pairwise(bounds):
        if b == a:
            continue
        # PyTorch's reference (math) kernel is the faster one on a CPU for short spans; it keeps the span's
        # scores for the backward pass, so longer spans go to the fused kernel, which does not
        short = query.shape[1] * (b - a) ** 2 <= MATH_SCORES
        with sdpa_kernel(SDPBackend.MATH) if short and query.device.type == "cpu" else nullcontext():
            span = (query[:, :, a:b], key[:, :, a:b], value[:, :, a:b])
            parts.append(sdpa_attention_forward(module, *span, None, is_causal=True, **kwargs)[0])
    return torch.cat(parts, dim=1), None  # (batch, length, heads, head dim), as sdpa_attention_forward returns


def register() -> str:
    """Make `attn_implementation="sdpa_varlen"` known to transformers (idempotent); returns the name."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, varlen_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the mask batches that are not one packed row need
    return NAME
