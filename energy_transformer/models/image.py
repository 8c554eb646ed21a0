"""Masked image completion with the Energy Transformer (spec §2.1), and its presets.

:class:`MaskedImageModel` holds what every masked-image model here shares (patches, pixel
normalisation, embeddings, masking, decoder, loss); :class:`ImageEnergyTransformer` fills the
middle with one ET block run for ``steps`` steps. The ViT baseline
(:mod:`energy_transformer.models.vit_mae`) fills it with separate transformer layers instead.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from energy_transformer.nn import EnergyTransformer, Trajectory
from energy_transformer.nn.attention import DenseKeySets
from energy_transformer.nn.block import GRADIENTS
from energy_transformer.nn.checks import check_descent, check_positive_int

FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LOSSES = ("mse", "rmse")


@dataclass
class Completion:
    """What :meth:`MaskedImageModel.complete` returns.

    Attributes:
        images: ``(batch, C, H, W)`` in pixel units: visible patches from the input, masked
            patches from the model.
        prediction: ``(batch, C, H, W)`` the model's output for every patch, in pixel units.
        mask: ``(batch, patches)`` bool, True = the patch was replaced by the MASK token.
        trajectory: tokens and energies at every step (ET models, when asked for).
    """

    images: Tensor
    prediction: Tensor
    mask: Tensor
    trajectory: Trajectory | None = None


def patch_mask_to_pixels(mask: Tensor, patch_size: int, channels: int = 1) -> Tensor:
    """Expand a square grid's patch mask to pixels.

    Shapes:
        - ``mask``: ``(batch, grid * grid)`` bool, row-major grid
        - output: ``(batch, channels, grid * patch_size, grid * patch_size)`` bool
    """
    batch, patches = mask.shape
    grid = round(patches**0.5)
    if grid * grid != patches:
        raise ValueError(f"a patch mask must cover a square grid, got {patches} patches")
    pixels = mask.view(batch, 1, grid, 1, grid, 1).expand(
        -1, channels, -1, patch_size, -1, patch_size
    )
    return pixels.reshape(batch, channels, grid * patch_size, grid * patch_size)


class MaskedImageModel(nn.Module):
    r"""Patches in, patches out: the frame shared by the masked-image models.

    An image is cut into ``(image_size / patch_size)^2`` square patches, each flattened channel
    first (``C x p x p``, the layout of the authors' released weights) and normalised by the
    dataset mean and std. One affine layer maps a patch to a ``dim``-token; masked patches are
    replaced by a learnable MASK token; learnable positional embeddings are added and a learnable
    CLS token is put first. Subclasses transform the ``(patches + 1)`` tokens in
    :meth:`process`; the decoder is ``decoder_norm`` then one affine layer back to patch pixels.

    Masking follows the paper: per image ``selected`` patches are drawn at random; ``masked`` of
    them are replaced by MASK, the rest stay visible but still count in the loss.

    Args:
        image_size: side of the square input image in pixels.
        patch_size: side of a square patch; must divide ``image_size``.
        channels: colour channels ``C``.
        dim: token dimension :math:`D`.
        selected: patches per image that count in the loss.
        masked: of those, how many are replaced by the MASK token.
        mean, std: per-channel pixel statistics used to normalise inputs and targets.
        loss: ``"mse"`` (default) or ``"rmse"`` over the selected patches, in normalised pixel
            units; the spec allows either ("RMSE (or MSE)"), and they share a minimiser.
        embed_init_std: std of the CLS, MASK and positional embeddings' normal init (0.002).

    Shapes:
        - ``images``: ``(batch, channels, image_size, image_size)`` floats in [0, 1]
        - patch masks: ``(batch, patches)`` bool
        - tokens: ``(batch, patches + 1, dim)``, CLS first
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        channels: int,
        dim: int,
        selected: int,
        masked: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        loss: str = "mse",
        embed_init_std: float = 0.002,
    ) -> None:
        super().__init__()
        if image_size < 1 or patch_size < 1 or image_size % patch_size:
            raise ValueError(
                f"patch_size {patch_size} must divide image_size {image_size} (both positive)"
            )
        self.grid = image_size // patch_size
        self.patches = self.grid * self.grid
        if not 0 <= masked <= selected <= self.patches:
            raise ValueError(
                f"need 0 <= masked ({masked}) <= selected ({selected}) <= patches ({self.patches})"
            )
        finite = all(math.isfinite(v) for v in (*mean, *std))
        if len(mean) != channels or len(std) != channels or not finite or min(std) <= 0:
            raise ValueError(
                f"mean and std need one finite value per channel ({channels}), std > 0;"
                f" got mean={mean}, std={std}"
            )
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.image_size, self.patch_size = image_size, patch_size
        self.channels, self.dim = channels, dim
        self.selected, self.masked, self.loss_kind = selected, masked, loss
        self.patch_dim = channels * patch_size * patch_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.encoder = nn.Linear(self.patch_dim, dim)
        self.cls_token = nn.Parameter(torch.randn(dim) * embed_init_std)
        self.mask_token = nn.Parameter(torch.randn(dim) * embed_init_std)
        self.pos_embed = nn.Parameter(torch.randn(self.patches + 1, dim) * embed_init_std)
        self.decoder = nn.Linear(dim, self.patch_dim)

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW should not decay (timm's convention, read by the Trainer)."""
        return {"pos_embed", "cls_token", "mask_token"}

    # -- to be provided by subclasses -------------------------------------------------------

    decoder_norm: nn.Module

    def process(self, tokens: Tensor, **kwargs: Any) -> Tensor | tuple[Tensor, Trajectory]:
        """Transform ``(batch, patches + 1, dim)`` tokens; subclasses implement it."""
        raise NotImplementedError

    # -- pixels and patches -----------------------------------------------------------------

    def _check_images(self, images: Tensor) -> None:
        if not isinstance(images, Tensor) or not images.is_floating_point():
            raise TypeError("images must be a floating-point tensor with values in [0, 1]")
        expected = (self.channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (batch, {', '.join(map(str, expected))}),"
                f" got {tuple(images.shape)}"
            )
        if images.shape[0] == 0:
            raise ValueError("images is an empty batch (shape (0, ...))")
        weight_dtype = self.encoder.weight.dtype
        if images.dtype != weight_dtype and not torch.is_autocast_enabled(images.device.type):
            raise TypeError(
                f"images are {images.dtype} but the model's weights are {weight_dtype}: convert"
                " one of them (images.to(...) or model.to(...)) or use torch.autocast"
            )
        # One pass (and one device sync): NaN propagates into both extremes, inf into one.
        low, high = torch.stack(torch.aminmax(images)).tolist()
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError("images contain NaN or inf")
        # Out-of-range pixels (0-255 images, say) would be normalised into silently wrong inputs.
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"images must have pixel values in [0, 1], got [{low:g}, {high:g}]"
                " (divide 8-bit images by 255)"
            )

    def patchify(self, images: Tensor) -> Tensor:
        """``(batch, C, H, W) -> (batch, patches, C * p * p)``, row-major grid, channel first."""
        b, c, _, _ = images.shape
        p, g = self.patch_size, self.grid
        x = images.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, g * g, c * p * p)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """Inverse of :meth:`patchify`: ``(batch, patches, C * p * p) -> (batch, C, H, W)``."""
        b = patches.shape[0]
        p, g, c = self.patch_size, self.grid, self.channels
        x = patches.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, g * p, g * p)

    def normalize(self, images: Tensor) -> Tensor:
        """Pixels in [0, 1] to dataset-normalised values: ``(batch, C, H, W)``, same shape."""
        return (images - self.mean) / self.std

    def denormalize(self, images: Tensor) -> Tensor:
        """Inverse of :meth:`normalize`: ``(batch, C, H, W)`` back to pixel units."""
        return images * self.std + self.mean

    # -- masking ----------------------------------------------------------------------------

    def sample_mask(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw which patches count in the loss and which of them are masked.

        ``batch`` rows; drawn from ``generator`` (on its own device) when given, returned on
        ``device``.

        Returns:
            ``(selected, masked)``, each ``(batch, patches)`` bool with ``masked`` a subset of
            ``selected``; every row has exactly ``self.selected`` and ``self.masked`` Trues.
        """
        check_positive_int("batch", batch)
        gen_device = generator.device if generator is not None else device
        order = torch.rand(batch, self.patches, generator=generator, device=gen_device).argsort(1)
        ranks = order.argsort(1)  # rank of each patch in a random permutation
        selected = ranks < self.selected
        masked = ranks < self.masked
        return selected.to(device), masked.to(device)

    def _check_mask(self, mask: Tensor, batch: int, name: str = "patch mask") -> Tensor:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor, one flag per patch")
        if mask.shape == (self.patches,):
            mask = mask.expand(batch, -1)
        if mask.shape != (batch, self.patches):
            raise ValueError(
                f"{name} must have shape ({batch}, {self.patches}) or ({self.patches},),"
                f" got {tuple(mask.shape)}"
            )
        return mask

    # -- the model --------------------------------------------------------------------------

    def embed(self, images: Tensor, mask: Tensor) -> Tensor:
        """Tokens ``(batch, patches + 1, dim)`` of images whose ``mask`` patches are hidden."""
        x = self.encoder(self.patchify(self.normalize(images)))
        x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)
        cls = self.cls_token.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype)

    def decode(self, tokens: Tensor) -> Tensor:
        """Normalised patches ``(batch, patches, C * p * p)`` of tokens (CLS dropped)."""
        return self.decoder(self.decoder_norm(tokens[:, 1:]))

    def forward(self, images: Tensor, mask: Tensor, **kwargs: Any) -> Tensor:
        """Predicted normalised patches ``(batch, patches, C * p * p)`` of every patch, from
        ``images: (batch, C, H, W)`` in [0, 1] whose ``mask`` patches (``(batch, patches)`` or
        ``(patches,)`` bool, True = hidden) are replaced by MASK; ``kwargs`` go to
        :meth:`process`."""
        self._check_images(images)
        mask = self._check_mask(mask, images.shape[0])
        return self.decode(self.process(self.embed(images, mask), **kwargs))

    def loss(
        self,
        images: Tensor,
        selected: Tensor | None = None,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Masked-patch loss of a batch: MSE (or RMSE) over the selected patches.

        Without ``selected``/``mask`` a fresh mask is drawn (from ``generator`` if given).
        Targets are the normalised input pixels.

        Shapes:
            - ``images``: ``(batch, C, H, W)`` in [0, 1]
            - ``selected``, ``mask``: ``(batch, patches)`` or ``(patches,)`` bool
            - output: a scalar
        """
        self._check_images(images)
        if (selected is None) != (mask is None):
            raise ValueError("pass both selected and mask, or neither")
        if selected is None:
            selected, mask = self.sample_mask(images.shape[0], generator, images.device)
        selected = self._check_mask(selected, images.shape[0], "selected")
        return self.patch_loss(self(images, mask), images, selected)

    def patch_loss(self, prediction: Tensor, images: Tensor, selected: Tensor) -> Tensor:
        """MSE (or RMSE) of normalised ``prediction`` against ``images`` over ``selected``.

        Shapes:
            - ``prediction``: ``(batch, patches, C * p * p)`` (the output of :meth:`forward`)
            - ``images``: ``(batch, C, H, W)`` in [0, 1]; ``selected``: ``(batch, patches)``
        """
        target = self.patchify(self.normalize(images))
        weight = selected[..., None].to(prediction.dtype)
        count = weight.sum() * prediction.shape[-1]
        if count == 0:
            raise ValueError("no patch is selected: the loss is undefined (selected = 0)")
        mse = ((prediction - target).pow(2) * weight).sum() / count
        return mse.sqrt() if self.loss_kind == "rmse" else mse

    @torch.no_grad()
    def complete(self, images: Tensor, mask: Tensor, **kwargs: Any) -> Completion:
        """Fill in the ``mask`` patches of ``images``.

        Args:
            images: ``(batch, C, H, W)`` in [0, 1].
            mask: ``(batch, patches)`` or ``(patches,)`` bool, True = hide this patch.
            **kwargs: passed to :meth:`process` (e.g. ``steps``, ``alpha``).
        """
        self._check_images(images)
        mask = self._check_mask(mask, images.shape[0])
        out = self.process(self.embed(images, mask), **kwargs)
        tokens, trajectory = out if isinstance(out, tuple) else (out, None)
        filled, prediction = self._fill(images, mask, tokens)
        return Completion(filled, prediction, mask, trajectory)

    @torch.no_grad()
    def fill(self, images: Tensor, mask: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Decode ``tokens`` to pixels and paste them into the ``mask`` patches of ``images``.

        Any state of the descent can be decoded this way (e.g. ``trajectory.tokens[t]``), which is
        how the pictures show the holes filling in step by step.

        Returns:
            ``(filled, prediction)``: the images with their masked patches replaced, and the
            decoded prediction of every patch, both ``(batch, C, H, W)`` in pixel units.

        Shapes:
            - ``images``: ``(batch, C, H, W)``; ``mask``: ``(batch, patches)`` or
              ``(patches,)`` bool
            - ``tokens``: ``(batch, patches + 1, dim)``, CLS first
        """
        self._check_images(images)
        mask = self._check_mask(mask, images.shape[0])
        # Tokens of one image would broadcast into every image of the batch, silently.
        expected = (images.shape[0], self.patches + 1, self.dim)
        if not isinstance(tokens, Tensor) or tuple(tokens.shape) != expected:
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must have shape {expected} (CLS first), got {shape}")
        return self._fill(images, mask, tokens)

    def _fill(self, images: Tensor, mask: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`fill` of checked inputs (``mask`` ``(batch, patches)``), as :meth:`complete`
        has them: its images are not scanned twice."""
        prediction = self.denormalize(self.unpatchify(self.decode(tokens)))
        pixel_mask = patch_mask_to_pixels(mask, self.patch_size, self.channels)
        return torch.where(pixel_mask, prediction, images), prediction


class ImageEnergyTransformer(MaskedImageModel):
    r"""Masked image completion with one Energy Transformer block (spec §2.1).

    .. math::
        x^{(0)} = [\mathrm{CLS};\, W_{enc} p_A + b_{enc} \text{ or MASK}] + \mathrm{POS},
        \quad x^{(t+1)} = x^{(t)} - \alpha \frac{\partial E}{\partial g}\big(\mathrm{LN}(x^{(t)})
        \big), \quad \hat p_A = W_{dec}\, \mathrm{LN}(x^{(T)}_A) + b_{dec}

    The decoder uses the block's own energy layer norm (as the released weights do).

    Args:
        image_size, patch_size, channels, dim, selected, masked, mean, std, loss,
            embed_init_std: see :class:`MaskedImageModel`.
        heads, head_dim, memories, hopfield, exclude_self, beta, qk_init_std, xi_init_std:
            see :class:`~energy_transformer.nn.EnergyTransformer`.
        steps: descent steps :math:`T`.
        alpha: step size :math:`\alpha`.
        gradient: ``"closed_form"`` (fast, default) or ``"autograd"``.

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
        head_dim: int = 32,
        memories: int | None = 512,
        steps: int = 12,
        alpha: float = 0.1,
        beta: float | None = None,
        hopfield: str = "relu",
        exclude_self: bool = False,
        selected: int = 25,
        masked: int = 20,
        mean: tuple[float, ...] = FASHION_MNIST_MEAN,
        std: tuple[float, ...] = FASHION_MNIST_STD,
        loss: str = "mse",
        gradient: str = "closed_form",
        embed_init_std: float = 0.002,
        qk_init_std: float = 0.002,
        xi_init_std: float = 0.02,
    ) -> None:
        super().__init__(
            image_size, patch_size, channels, dim, selected, masked, mean, std, loss, embed_init_std
        )
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        check_descent(steps, alpha)
        self.config = {
            "image_size": image_size,
            "patch_size": patch_size,
            "channels": channels,
            "dim": dim,
            "heads": heads,
            "head_dim": head_dim,
            "memories": memories,
            "steps": steps,
            "alpha": alpha,
            "beta": beta,
            "hopfield": hopfield,
            "exclude_self": exclude_self,
            "selected": selected,
            "masked": masked,
            "mean": list(mean),
            "std": list(std),
            "loss": loss,
            "gradient": gradient,
        }
        self.steps, self.alpha, self.gradient = steps, alpha, gradient
        self.block = EnergyTransformer(
            dim,
            heads,
            head_dim,
            memories,
            hopfield=hopfield,
            exclude_self=exclude_self,
            beta=beta,
            qk_init_std=qk_init_std,
            xi_init_std=xi_init_std,
        )

    @property
    def decoder_norm(self) -> nn.Module:
        """The block's own energy layer norm (one set of weights, as released)."""
        return self.block.norm

    def process(
        self,
        tokens: Tensor,
        steps: int | None = None,
        alpha: float | None = None,
        gradient: str | None = None,
        return_trajectory: bool = False,
    ) -> Tensor | tuple[Tensor, Trajectory]:
        """Run the ET block on ``tokens: (batch, patches + 1, dim)``: the final tokens, same
        shape, and with ``return_trajectory`` the
        :class:`~energy_transformer.nn.Trajectory`; ``steps``/``alpha``/``gradient`` default to
        the model's own."""
        return self.block(
            tokens,
            steps=self.steps if steps is None else steps,
            alpha=self.alpha if alpha is None else alpha,
            gradient=self.gradient if gradient is None else gradient,
            return_trajectory=return_trajectory,
        )

    @torch.no_grad()
    def module_updates(self, tokens: Tensor) -> dict[str, Tensor]:
        """Each module's update at ``tokens``, as the change it makes to the decoded image.

        The decoder reads :math:`W\\,\\mathrm{LN}(x) + b`, so a step :math:`\\Delta x = \\alpha u`
        (:math:`u` the attention part of :math:`-\\partial E/\\partial g`, the Hopfield part, or
        their sum) changes the picture by :math:`W M \\Delta x` to first order, with :math:`M`
        the layer norm's Jacobian at :math:`x`; that is what is returned, laid out as images.
        (The parts add up: :math:`M` is linear.)

        Args:
            tokens: ``(batch, patches + 1, dim)``.

        Returns:
            ``{"attention", "hopfield", "total"}`` -> ``(batch, C, H, W)``: the change one step
            makes to the decoded picture, in normalised pixel units.
        """
        g = self.block.norm(tokens)
        keysets = DenseKeySets(
            tokens.shape[1], exclude_self=self.block.exclude_self, dtype=g.dtype, device=g.device
        )
        parts = {
            "attention": self.block.attention.neg_grad(g, keysets),
            "hopfield": self.block.hopfield.neg_grad(g),
        }
        parts["total"] = parts["attention"] + parts["hopfield"]
        weight = self.decoder.weight  # (patch_dim, dim)
        patches = tokens[:, 1:]  # the CLS token is not decoded
        return {
            name: self.unpatchify(
                self.block.norm.jacobian_vector(patches, self.alpha * update[:, 1:]) @ weight.T
            )
            for name, update in parts.items()
        }

    @torch.no_grad()
    def memory_patches(self) -> Tensor:
        """The Hopfield memories :math:`\\xi_m` seen through the decoder's linear map.

        Returns:
            ``(memories, C, p, p)`` in normalised pixel units (no bias: directions).
        """
        patches = self.block.hopfield.xi @ self.decoder.weight.T  # (memories, patch_dim)
        p = self.patch_size
        return patches.view(-1, self.channels, p, p)


# -- presets ----------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's ImageNet-1k model: 4.87 M parameters (3.54 M in the ET block). Self-attention
    # (B = C) is allowed, as the authors' released weights were trained; the paper excludes it
    # (spec §1.2: "works equally well both ways"): pass exclude_self=True for that.
    "imagenet": {
        "image_size": 224,
        "patch_size": 16,
        "channels": 3,
        "dim": 768,
        "heads": 12,
        "head_dim": 64,
        "memories": 3072,
        "steps": 12,
        "alpha": 0.1,
        "beta": 1.0 / 8.0,
        "selected": 100,
        "masked": 90,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    },
    # A small model for 28x28 grey images: 49 patches + CLS, trains on a laptop CPU. About half
    # the patches in the loss as in the paper (25 of 49; 100 of 196), of which 20 are hidden:
    # 80% where the paper hides 90% (22 of 25): a departure, kept because RESULTS.md and the
    # demo's numbers were measured with it.
    "fashion-mnist": {
        "image_size": 28,
        "patch_size": 4,
        "channels": 1,
        "dim": 128,
        "heads": 4,
        "head_dim": 32,
        "memories": 512,
        "steps": 12,
        "alpha": 0.1,
        "selected": 25,
        "masked": 20,
        "mean": FASHION_MNIST_MEAN,
        "std": FASHION_MNIST_STD,
    },
}
PRESETS["mnist"] = {**PRESETS["fashion-mnist"], "mean": (0.1307,), "std": (0.3081,)}
# Training settings of each preset (``et train image`` flags override them). imagenet: the
# paper's (spec §2.1: AdamW, weight decay 0.05, lr 5e-4, 2 warm-up epochs, batch 768, 100
# epochs); the small presets: a budget that trains on a laptop CPU in minutes per epoch.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "imagenet": {"epochs": 100, "batch_size": 768, "lr": 5e-4, "warmup_epochs": 2.0},
    "fashion-mnist": {"epochs": 10, "batch_size": 128, "lr": 3e-3, "warmup_epochs": 1.0},
}
TRAIN_PRESETS["mnist"] = TRAIN_PRESETS["fashion-mnist"]


def list_presets() -> list[str]:
    """Names accepted by :func:`image_preset` and :func:`create_model`."""
    return sorted(PRESETS)


def image_preset(name: str) -> dict[str, Any]:
    """A copy of the keyword arguments of preset ``name`` (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown image preset {name!r}; choose one of {list_presets()}")
    return copy.deepcopy(PRESETS[name])


def create_model(name: str, **overrides: Any) -> ImageEnergyTransformer:
    """Build preset ``name``, with any constructor argument overridden.

    Example:
        >>> model = create_model("fashion-mnist", steps=6)
    """
    return ImageEnergyTransformer(**{**image_preset(name), **overrides})
