"""Versioned LoRA fine-tuning on DVC: what the pipeline stages and the version tool share."""
