"""Evaluation protocols: how data are split, how models are selected and scored."""
