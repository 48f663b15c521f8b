"""Stage `train`: params.yaml `train`, LoRA fine-tuning with TRL's SFTTrainer, the version directory."""
