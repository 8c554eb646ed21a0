"""Task recipes: what to train, how to score it, what to draw; each plugs into the `et` CLI."""
