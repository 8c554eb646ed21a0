"""Task models that wrap the Energy Transformer block, and the baselines they are compared with."""
