"""Stage `train`: LoRA fine-tuning of the base with TRL's SFTTrainer, from params.yaml `train`.

Writes the version directory (adapter_model.safetensors, adapter_config.json, tokenizer
files, metadata.json) and dvclive metrics and plots. Saves a checkpoint after each epoch; a
run that was killed resumes from the newest checkpoint made with the same params, data and
base (any other is discarded, with a message). With train.processes above 1 it runs itself
again under `accelerate launch` (loravc.train.launch). Its output ends with (the default run's figures: README):
    train: v_<UTC time>_<6 hex> r=<rank>, <steps> steps, train loss <loss>, validation loss <loss> -> models/adapter
"""

import sys

from loravc.core.errors import run_main
from loravc.core.stage import arguments


def main() -> None:
    args = arguments(
        __doc__,
        {
            "base": "base model directory (stage `base`)",
            "data": "prepared splits directory (stage `prepare`)",
            "out": "version directory to write (a DVC output)",
            "live": "dvclive directory for metrics and plots",
        },
        {"checkpoints": "directory for per-epoch checkpoints (default: a temporary one)"},
    )

    from loravc.core.params import load_sections
    from loravc.train import launch
    from loravc.train.params import TrainParams
    from loravc.train.training import train

    params = load_sections(args.params, train=TrainParams).train
    if params.processes > 1 and not launch.launched():
        launch.relaunch(params.processes, params.device, "stages.train", sys.argv[1:])
        return
    meta = train(params, args.base, args.data, args.out, args.live, args.checkpoints)
    if launch.is_main_process():
        m = meta.metrics
        print(
            f"train: {meta.version_id} r={meta.lora.r}, {m.steps} steps, train loss "
            f"{m.train_loss:.4f}, validation loss {m.validation_loss:.4f} -> {args.out}"
        )
    launch.finish()


if __name__ == "__main__":
    run_main(main)
