"""`loravc tune`: params.yaml `tune`, a hyperparameter search whose trials are DVC experiments."""
