"""energy-transformer: the Energy Transformer (Hoover et al., NeurIPS 2023) in PyTorch."""

from energy_transformer.nn import (
    DenseKeySets,
    EdgeKeySets,
    EnergyAttention,
    EnergyLayerNorm,
    EnergyTerms,
    EnergyTransformer,
    HopfieldNetwork,
    KeySets,
    Trajectory,
)
from energy_transformer.tasks import load_model

__version__ = "0.1.0"

__all__ = [
    "DenseKeySets",
    "EdgeKeySets",
    "EnergyAttention",
    "EnergyLayerNorm",
    "EnergyTerms",
    "EnergyTransformer",
    "HopfieldNetwork",
    "KeySets",
    "Trajectory",
    "__version__",
    "load_model",
]
