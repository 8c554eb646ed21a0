"""A non-learned baseline: fill the masked patches from the visible pixels around them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from energy_transformer.models.image import Completion, patch_mask_to_pixels

METHODS = ("harmonic", "nearest")


class PatchInterpolation:
    r"""Fill masked patches by interpolating the visible pixels; nothing is learned.

    ``"harmonic"`` (default) solves Laplace's equation on the hidden pixels with the visible ones
    as boundary values: every hidden pixel becomes the mean of its 4 neighbours (Jacobi
    iterations from the mean visible value),

    .. math::
        u_{ij} \leftarrow \tfrac14 (u_{i-1,j} + u_{i+1,j} + u_{i,j-1} + u_{i,j+1})

    the smoothest fill consistent with the border of each hole. ``"nearest"`` copies the value of
    the nearest visible pixel (Euclidean distance). An image with no visible pixel gets the mean
    grey ``fill``.

    Args:
        patch_size: side of a square patch in pixels.
        method: ``"harmonic"`` or ``"nearest"``.
        iterations: Jacobi iterations of ``"harmonic"``.
        fill: value used when an image has no visible pixel at all.

    Shapes:
        - ``images``: ``(batch, C, H, W)``; ``mask``: ``(batch, patches)`` bool, True = hidden
    """

    def __init__(
        self, patch_size: int, method: str = "harmonic", iterations: int = 200, fill: float = 0.5
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.patch_size, self.method = patch_size, method
        self.iterations, self.fill = iterations, fill

    def _harmonic(self, images: Tensor, hidden: Tensor) -> Tensor:
        known = (~hidden).to(images.dtype)
        count = known.sum(dim=(2, 3), keepdim=True)
        total = (images * known).sum(dim=(2, 3), keepdim=True)
        mean = torch.where(count > 0, total / count.clamp(min=1), self.fill)
        u = torch.where(hidden, mean, images)
        # Neighbours outside the image do not count: divide by the number inside.
        inside = F.pad(torch.ones_like(images[:1, :1]), (1, 1, 1, 1))
        neighbours = inside[..., :-2, 1:-1] + inside[..., 2:, 1:-1]
        neighbours = neighbours + inside[..., 1:-1, :-2] + inside[..., 1:-1, 2:]
        for _ in range(self.iterations):
            p = F.pad(u, (1, 1, 1, 1))
            avg = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
            u = torch.where(hidden, avg / neighbours, u)
        return u

    def _nearest(self, images: Tensor, hidden: Tensor) -> Tensor:
        b, c, h, w = images.shape
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        coords = torch.stack([rows.flatten(), cols.flatten()], dim=1).to(images)
        dist = torch.cdist(coords, coords)  # (H*W, H*W)
        visible = ~hidden[:, 0].reshape(b, h * w)  # the mask is the same for every channel
        d = dist.expand(b, -1, -1).masked_fill(~visible[:, None, :], float("inf"))
        source = d.argmin(dim=-1)  # (b, H*W): nearest visible pixel of every pixel
        flat = images.reshape(b, c, h * w)
        out = flat.gather(2, source[:, None, :].expand(-1, c, -1)).view(b, c, h, w)
        return torch.where(
            visible.any(dim=1).view(b, 1, 1, 1), out, torch.full_like(out, self.fill)
        )

    @torch.no_grad()
    def complete(self, images: Tensor, mask: Tensor) -> Completion:
        """Fill the ``mask`` patches of ``images`` (``(batch, C, H, W)``, mask ``(batch, N)``).

        Nothing predicts the visible patches, so the :class:`Completion`'s ``prediction`` is
        the filled image itself.
        """
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(f"images must be (batch, C, H, W) floats, got {tuple(images.shape)}")
        if mask.dtype != torch.bool or mask.shape[0] != images.shape[0]:
            raise ValueError("mask must be a (batch, patches) bool tensor, True = hidden")
        hidden = patch_mask_to_pixels(mask, self.patch_size, images.shape[1])
        if hidden.shape != images.shape:
            raise ValueError(
                f"a {mask.shape[1]}-patch mask with patch size {self.patch_size} does not fit"
                f" images of shape {tuple(images.shape)}"
            )
        fill = self._harmonic if self.method == "harmonic" else self._nearest
        filled = torch.where(hidden, fill(images, hidden), images)
        return Completion(filled, filled, mask)
