"""The math of the Energy Transformer: small pure modules, no training code."""

from energy_transformer.nn.attention import DenseKeySets, EnergyAttention, KeySets
from energy_transformer.nn.block import EnergyTerms, EnergyTransformer, Trajectory
from energy_transformer.nn.hopfield import HopfieldNetwork
from energy_transformer.nn.layernorm import EnergyLayerNorm

__all__ = [
    "DenseKeySets",
    "EnergyAttention",
    "EnergyLayerNorm",
    "EnergyTerms",
    "EnergyTransformer",
    "HopfieldNetwork",
    "KeySets",
    "Trajectory",
]
