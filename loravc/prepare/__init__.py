"""Stage `prepare`: params.yaml `data` and `prepare`, the splits and their token counts."""
