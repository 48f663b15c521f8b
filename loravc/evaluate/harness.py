"""lm-evaluation-harness tasks on the base and on base + adapter: what fine-tuning breaks on other tasks.

Optional (the `eval` extra; scripts/setup.sh installs it from the locks). `evaluate.harness` names the tasks:
lm-eval's own (their datasets must be in the Hugging Face cache, or the hub reachable) or ones defined by YAML files in
TASKS_DIR, which dvc.yaml lists as a dependency of `evaluate`. Every task is loaded, dataset
included, before any model loads, so a name that does not exist or a dataset that is not there
stops the stage at once. Both models are scored through lm-eval's HF model wrapping the one
PeftModel in memory (the adapter switched off for the base).
"""

from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.core.quiet import progress_bars_off

TASKS_DIR = Path("data/harness")  # local task definitions (YAML), a dependency of the evaluate stage


def load_tasks(names: list[str], tasks_dir: Path = TASKS_DIR) -> Any:
    """lm-eval's TaskManager for `names`, each checked to exist and to load offline; None for no names."""
    if not names:
        return None
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError(
            "evaluate.harness lists tasks but lm-evaluation-harness is not installed: "
            "run `bash scripts/setup.sh` (the locks hold it), or set evaluate.harness: []"
        ) from None
    local = str(tasks_dir) if tasks_dir.is_dir() else None
    manager = TaskManager(include_path=local, include_defaults=False) if local else None
    if manager is None or any(name not in manager.all_tasks for name in names):
        manager = TaskManager(include_path=local)  # lm-eval's own tasks too: indexing them takes seconds
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        raise UserError(
            f"evaluate.harness: no lm-eval task {', '.join(map(repr, unknown))} (neither lm-eval's own nor a YAML "
            f"file in {tasks_dir}/): `lm-eval ls tasks` lists lm-eval's"
        )
    for name in names:
        try:
            manager.load([name])  # builds the task, which loads its dataset
        except Exception as err:  # lm-eval and datasets raise many kinds; any of them means it cannot run here
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(
                f"evaluate.harness: task {name!r} could not be loaded ({reason}): put its dataset in the Hugging "
                "Face cache on a machine with network (HF_HOME), or remove it from evaluate.harness"
            ) from None
    return manager


def run(
    model: Any,
    tokenizer: Any,
    names: list[str],
    manager: Any,
    *,
    batch_size: int,
    limit: int | None,
    seed: int,
    max_length: int = 512,
) -> dict[str, float]:
    """{"<task>_<metric>": value} of `model` (a transformers model; LoRA layers active or not) on the tasks.

    A metric under a filter other than lm-eval's "none" gets the filter's name appended; stderr values
    are kept (`<metric>_stderr`) where lm-eval computes them.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    # max_length bounds each request (lm-eval would take the model's context, 8k tokens for SmolLM2: GBs of
    # logits per batch on a CPU); rolling-loglikelihood tasks score longer texts in windows of it
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    seeds = {"random_seed": seed, "numpy_random_seed": seed, "torch_random_seed": seed, "fewshot_random_seed": seed}
    with progress_bars_off():  # lm-eval draws a bar per task and request type, with no switch of its own
        results = simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=limit, log_samples=False, **seeds)
    scores: dict[str, float] = {}
    for task, values in sorted(results["results"].items()):
        for key, value in values.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            suffix = "" if filter_name == "none" else f"_{filter_name}"
            scores[f"{task}_{metric}{suffix}"] = round(float(value), 6)
    return scores
