"""Records and which of their tokens train: read by stages prepare, train and evaluate."""
