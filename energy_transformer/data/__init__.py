"""Dataset loaders for the public formats, and where the files live."""
