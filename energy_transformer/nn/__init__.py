"""The math of the Energy Transformer: small pure modules, no training code."""

from energy_transformer.nn.attention import DenseKeySets, EnergyAttention, KeySets
from energy_transformer.nn.block import EnergyTerms, EnergyTransformer, Trajectory
from energy_transformer.nn.hopfield import HopfieldNetwork
from energy_transformer.nn.layernorm import EnergyLayerNorm
from energy_transformer.nn.sparse_attention import EdgeKeySets

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
]
