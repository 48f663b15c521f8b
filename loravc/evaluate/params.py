"""params.yaml `evaluate`: test perplexity, task scores and samples of base vs fine-tuned."""

from dataclasses import dataclass

from loravc.core.params import check_device, knob, require
from loravc.evaluate.scoring import check_metrics


@dataclass
class EvaluateParams:
    """Held-out perplexity and task scores of base vs fine-tuned, and greedy samples of both."""

    device: str = knob("auto", "auto, cpu, cuda, cuda:N or mps")
    batch_size: int = knob(8, "test records per forward pass (and per batch of generated answers)")
    max_new_tokens: int = knob(40, "tokens generated per answer and per sample")
    metrics: list[str] = knob(
        ["exact_match", "f1", "chrf"],
        "scores of each answer to a prompt-completion or chat test record: exact_match, f1, chrf ([]: none)",
    )
    bootstrap_samples: int = knob(1000, "resamples of the test records for each gain's 95% interval")
    seed: int = knob(42, "seed of the bootstrap: the same answers give the same interval")
    harness: list[str] = knob(
        [], "lm-evaluation-harness tasks run on base and tuned (needs the [eval] extra; YAML tasks in data/harness/)"
    )
    harness_limit: int | None = knob(None, "records per harness task at most (null: all)")
    harness_max_length: int = knob(512, "tokens per harness request (longer texts are scored in windows)")
    samples: int = knob(3, "test records whose prompts both models continue, in reports/samples.md")
    prompts: list[str] = knob([], "fixed prompts to sample as well (a user message for a chat-trained version)")

    def __post_init__(self) -> None:
        check_device(self.device, "evaluate.device")
        require(self.batch_size >= 1, "evaluate.batch_size", "must be at least 1")
        require(self.max_new_tokens >= 1, "evaluate.max_new_tokens", "must be at least 1")
        require(self.samples >= 0, "evaluate.samples", "must be 0 or more")
        require(self.bootstrap_samples >= 100, "evaluate.bootstrap_samples", "must be at least 100")
        require(self.harness_limit is None or self.harness_limit >= 1, "evaluate.harness_limit", "must be null or >= 1")
        require(self.harness_max_length >= 16, "evaluate.harness_max_length", "must be at least 16")
        check_metrics(self.metrics)
