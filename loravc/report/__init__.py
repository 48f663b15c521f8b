"""Stage `report`: dvc.yaml's plots drawn offline (also `loravc plots`)."""
