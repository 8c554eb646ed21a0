"""The baseline ET is measured against: a ViT masked autoencoder with ``depth`` separate layers.

Same patches, pixel normalisation, CLS/MASK/positional embeddings, masking, decoder and loss as
:class:`~energy_transformer.models.image.ImageEnergyTransformer`; the ET block (one set of
weights run ``steps`` times) is replaced by ``depth`` standard pre-LN transformer layers, each
with its own weights, so the model has about ``depth`` times the parameters of the middle part.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from energy_transformer.models.image import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    MaskedImageModel,
)


class ViTMaskedAutoencoder(MaskedImageModel):
    r"""Masked image completion with ``depth`` pre-LN transformer encoder layers.

    .. math::
        x \leftarrow x + \mathrm{MHA}(\mathrm{LN}_1(x)), \qquad
        x \leftarrow x + \mathrm{MLP}(\mathrm{LN}_2(x))

    per layer (GELU MLP with ``mlp_dim`` hidden units, no dropout), then a final layer norm and
    the affine decoder.

    Args:
        image_size, patch_size, channels, dim, selected, masked, mean, std, loss,
            embed_init_std: see :class:`~energy_transformer.models.image.MaskedImageModel`.
        heads: attention heads (head dim ``dim // heads``).
        depth: number of layers (compare with ET's ``steps``).
        mlp_dim: hidden units of each layer's MLP (default ``4 * dim``, like ET's memories).

    Shapes:
        - ``images``: ``(batch, channels, image_size, image_size)`` in [0, 1]
        - output of :meth:`forward`: ``(batch, patches, channels * patch_size ** 2)``
    """

    def __init__(
        self,
        image_size: int = 28,
        patch_size: int = 4,
        channels: int = 1,
        dim: int = 128,
        heads: int = 4,
        depth: int = 12,
        mlp_dim: int | None = None,
        selected: int = 25,
        masked: int = 20,
        mean: tuple[float, ...] = FASHION_MNIST_MEAN,
        std: tuple[float, ...] = FASHION_MNIST_STD,
        loss: str = "mse",
        embed_init_std: float = 0.002,
    ) -> None:
        super().__init__(
            image_size, patch_size, channels, dim, selected, masked, mean, std, loss, embed_init_std
        )
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        mlp_dim = 4 * dim if mlp_dim is None else mlp_dim
        self.config = {
            "image_size": image_size,
            "patch_size": patch_size,
            "channels": channels,
            "dim": dim,
            "heads": heads,
            "depth": depth,
            "mlp_dim": mlp_dim,
            "selected": selected,
            "masked": masked,
            "mean": list(mean),
            "std": list(std),
            "loss": loss,
        }
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                mlp_dim,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.decoder_norm = nn.LayerNorm(dim)

    def process(self, tokens: Tensor, **kwargs: Any) -> Tensor:
        """Run the ``depth`` layers: ``(batch, patches + 1, dim) -> (batch, patches + 1, dim)``."""
        if kwargs:
            raise TypeError(f"ViTMaskedAutoencoder takes no options here, got {sorted(kwargs)}")
        for layer in self.layers:
            tokens = layer(tokens)
        return tokens


def matching_vit_config(et_config: dict[str, Any]) -> dict[str, Any]:
    """ViT keyword arguments matching an ImageEnergyTransformer's: same patches, token dim,
    heads, masking and pixel statistics; ``depth = steps`` and ``mlp_dim = memories``."""
    shared = ("image_size", "patch_size", "channels", "dim", "heads", "selected", "masked")
    config = {k: et_config[k] for k in shared if k in et_config}
    for k in ("mean", "std"):
        if k in et_config:
            config[k] = tuple(et_config[k])
    config["depth"] = et_config.get("steps", 12)
    config["mlp_dim"] = et_config.get("memories") or 4 * config.get("dim", 128)
    if "loss" in et_config:
        config["loss"] = et_config["loss"]
    return config
