"""One module per DVC stage; each reads its params.yaml section of the same name."""
