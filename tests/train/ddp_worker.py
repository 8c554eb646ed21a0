"""Launched by torchrun from test_distributed.py: trains the toy model, rank 0 saves its
weights and their moving average (``ema/``)."""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from toy import mse_loss, toy_dataset, toy_model  # noqa: E402

from energy_transformer.train import TrainConfig, Trainer, make_loader, world  # noqa: E402


def main(out: str) -> None:
    loader = make_loader(toy_dataset(), batch_size=8, seed=3, device="cpu")
    config = TrainConfig(
        epochs=3, lr=1e-2, warmup_epochs=1, seed=3, device="cpu", progress=False, ema_decay=0.9
    )
    trainer = Trainer(toy_model(), mse_loss, config)
    trainer.fit(loader)
    if world()[0] == 0:
        weights = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
        weights |= {f"ema/{k}": v.contiguous() for k, v in trainer.ema.state_dict().items()}
        save_file(weights, out)


if __name__ == "__main__":
    main(sys.argv[1])
