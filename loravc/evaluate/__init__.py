"""Stage `evaluate`: params.yaml `evaluate`, perplexity and task scores of base vs fine-tuned."""
