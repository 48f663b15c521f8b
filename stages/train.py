"""Stage `train`: LoRA fine-tuning of the base with TRL's SFTTrainer, from params.yaml `train`.

Writes the version directory (adapter_model.safetensors, adapter_config.json, tokenizer
files, metadata.json) and dvclive metrics and plots. Saves a checkpoint after each epoch; a
run that was killed resumes from the newest checkpoint made with the same params, data and
base (any other is discarded, with a message). With train.processes above 1 it runs itself
again under `accelerate launch` (loravc.launch). Expected output ends with:
    train: v_<UTC time> r=4, 28 steps, train loss 3.1816, validation loss 3.1994 -> models/adapter
"""

import argparse
import sys
from pathlib import Path

from loravc.errors import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="base model directory (stage `base`)")
    parser.add_argument("--data", type=Path, required=True, help="prepared splits directory (stage `prepare`)")
    parser.add_argument("--out", type=Path, required=True, help="version directory to write (a DVC output)")
    parser.add_argument("--live", type=Path, required=True, help="dvclive directory for metrics and plots")
    parser.add_argument(
        "--checkpoints", type=Path, default=None, help="directory for per-epoch checkpoints (default: a temporary one)"
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args()

    from loravc import launch
    from loravc.params import load_params
    from loravc.training import train

    params = load_params(args.params)
    if params.train.processes > 1 and not launch.launched():
        launch.relaunch(params.train.processes, params.train.device, "stages.train", sys.argv[1:])
        return
    meta = train(params, args.base, args.data, args.out, args.live, args.checkpoints)
    if launch.is_main_process():
        m = meta["metrics"]
        print(
            f"train: {meta['version_id']} r={params.train.lora.r}, {m['steps']} steps, train loss "
            f"{m['train_loss']:.4f}, validation loss {m['validation_loss']:.4f} -> {args.out}"
        )
    launch.finish()


if __name__ == "__main__":
    run_main(main)
