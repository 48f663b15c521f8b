"""Stages `source` and `base`: the base model named in params.yaml `base`, materialized once."""
