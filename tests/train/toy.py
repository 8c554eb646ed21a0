"""A tiny regression problem shared by the trainer tests and the torchrun worker."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from energy_transformer.train import TrainConfig


def toy_dataset(n: int = 40, dim: int = 6, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = x @ torch.randn(dim, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def toy_model(dim: int = 6, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))


def mse_loss(model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
    x, y = batch
    loss = nn.functional.mse_loss(model(x), y)
    return loss, {"mse": loss.item()}


def toy_config(**kw) -> TrainConfig:
    """Three quick CPU epochs of the toy problem; ``kw`` overrides any setting."""
    base = dict(epochs=3, lr=1e-2, warmup_epochs=1, seed=1, device="cpu", progress=False)
    return TrainConfig(**{**base, **kw})


def killed_at_evaluation(n: int):
    """An ``evaluate`` that raises at its ``n``-th call: a run killed after epoch ``n - 1``'s
    checkpoint, for the resume tests."""
    calls = {"n": 0}

    def evaluate(model: nn.Module) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError(f"simulated kill during evaluation of epoch {n}")
        return {"val": 0.0}

    return evaluate
