"""Shared pictures: energy descent, completion along the descent, reconstructions, memories,
updates, positional embeddings, graph attention, anomaly score distributions.

Every function writes one PNG (matplotlib's Agg backend, no display needed) and returns its path.
Task modules reuse :func:`plot_energy_descent`; the image-specific figures take plain tensors so
they do not depend on a model class.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from torch import Tensor  # noqa: E402

from energy_transformer.metrics import auprc, auroc  # noqa: E402
from energy_transformer.nn import EnergyTerms  # noqa: E402
from energy_transformer.text import counted  # noqa: E402

# One colour per energy term, kept identical across figures.
TERM_COLOURS = {"total": "#1f2937", "attention": "#2563eb", "hopfield": "#dc2626"}
TERM_LABELS = {
    "total": "total  $E$",
    "attention": "attention  $E_{att}$",
    "hopfield": "Hopfield  $E_{hn}$",
}


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (``.png`` added when it has no suffix) and return the file."""
    path = Path(path)
    if path.is_dir():
        plt.close(fig)
        raise ValueError(f"{path} is a folder: give the picture's file name")
    if not path.suffix:
        path = path.with_suffix(".png")  # what savefig would write, so that we return it
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _check_energies(energies: EnergyTerms) -> None:
    for name, values in energies._asdict().items():
        if not isinstance(values, Tensor) or values.dim() != 2:
            shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise ValueError(f"energies.{name} must be a (steps + 1, batch) tensor, got {shape}")
        if values.shape != energies.total.shape:
            raise ValueError(
                f"energies.{name} has shape {tuple(values.shape)} but total has"
                f" {tuple(energies.total.shape)}"
            )


def plot_energy_descent(
    energies: EnergyTerms, path: str | Path, title: str = "", unit: str = "samples"
) -> Path:
    """Energy against descent step, total and per term: each sample's change from step 0,
    mean :math:`\\pm` std over the batch (the mean start energy and its mean change are printed:
    each panel has its own scale).

    Args:
        energies: :class:`~energy_transformer.nn.EnergyTerms` whose fields are
            ``(steps + 1, batch)`` tensors, as in ``Trajectory.energies`` (index 0 = input).
        path: where to write the PNG.
        title: figure title.
        unit: what one column of ``energies`` is, for the axis label (``"images"``, ``"graphs"``,
            ``"nodes"``).

    Shapes:
        - each field of ``energies``: ``(steps + 1, batch)``
    """
    _check_energies(energies)
    terms = {name: getattr(energies, name) for name in ("total", "attention", "hopfield")}
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.6), constrained_layout=True)
    for ax, (name, values) in zip(axes, terms.items(), strict=True):
        values = values.detach().double().cpu()
        # Each sample's change from its own start: the batch spread of absolute energies would
        # otherwise hide the descent.
        change = values - values[:1]
        steps = np.arange(values.shape[0])
        mean = change.mean(dim=1)
        std = change.std(dim=1) if values.shape[1] > 1 else torch.zeros_like(mean)
        mean, std = mean.numpy(), std.numpy()
        colour = TERM_COLOURS[name]
        ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.18, linewidth=0)
        ax.plot(steps, mean, color=colour, marker="o", markersize=3.5, linewidth=2)
        ax.set_title(TERM_LABELS[name], fontsize=11)
        ax.set_xlabel("descent step $t$")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        ax.margins(x=0.02)
        start, end = values[0].mean().item(), values[-1].mean().item()
        ax.text(
            0.97,
            0.95,
            f"mean $E(0)$ = {start:.4g}\nmean $\\Delta E$ = {end - start:+.4g}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8.5,
            color="#374151",
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#d1d5db"},
        )
    samples = values.shape[1]
    spread = (
        f"per {unit.removesuffix('s')}\n(mean ± std over {samples} {unit})" if samples > 1 else ""
    )
    axes[0].set_ylabel(f"$E(t) - E(0)$ {spread}".strip())
    if title:
        fig.suptitle(title, fontsize=12, fontweight="bold")
    return _save(fig, path)


def _check_pictures(name: str, images: Tensor, square: bool = False) -> None:
    """``images`` must be ``(n >= 1, C in {1, 3}, H, W)`` (``H == W`` with ``square``)."""
    shape = tuple(images.shape)
    if (
        images.dim() != 4
        or shape[0] == 0
        or shape[1] not in (1, 3)
        or (square and shape[2] != shape[3])
    ):
        kind = "(n, C, p, p) square patches" if square else "(n, C, H, W) images"
        raise ValueError(f"{name} must be {kind}, n >= 1 and C 1 or 3, got {shape}")


def _bare(ax: plt.Axes, frame: bool = False) -> None:
    """No ticks, and no frame unless ``frame``: the axes hold a picture, not a plot. A frame
    keeps the edge of a picture whose colour at 0 is near the page's white (a diverging map)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(frame)


def _picture(ax: plt.Axes, image: np.ndarray) -> None:
    """One image in [0, 1] on ``ax``, grey where it has one channel, with no ticks or frame."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    _bare(ax)


def _as_display(images: Tensor) -> np.ndarray:
    """``(n, C, H, W)`` images in [0, 1] -> ``(n, H, W)`` or ``(n, H, W, 3)`` for imshow.

    matplotlib is given numpy arrays throughout: its conversion of tensors is deprecated.
    """
    images = images.detach().float().cpu().clamp(0, 1)
    return (images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)).numpy()


def plot_reconstructions(
    masked: Tensor,
    reconstructed: Tensor,
    original: Tensor,
    path: str | Path,
    title: str = "",
    errors: Tensor | None = None,
    baselines: dict[str, Tensor] | None = None,
    label: str = "reconstructed",
) -> Path:
    """A grid of rows masked / reconstructed / (baselines) / original, one column per image.

    Args:
        masked: images with the masked patches drawn over, in [0, 1].
        reconstructed: the model's completion, in [0, 1].
        original: the input images, in [0, 1].
        path: where to write the PNG.
        title: figure title.
        errors: optional per-image masked-patch MSE, ``(n,)``, printed under each column.
        baselines: optional name -> another method's completion of the same masked images,
            one row each, so the model is seen beside what it is compared with.
        label: the model's row label (e.g. its name, beside the baselines').

    Shapes:
        - ``masked``, ``reconstructed``, ``original`` and each baseline: ``(n, C, H, W)``,
          ``C`` in {1, 3}
    """
    others = dict(baselines or {})
    shapes = [t.shape for t in (masked, reconstructed, original, *others.values())]
    if any(shape != masked.shape for shape in shapes) or masked.dim() != 4:
        raise ValueError(
            "masked, reconstructed, original and the baselines must be (n, C, H, W) of one"
            f" shape, got {', '.join(str(tuple(shape)) for shape in shapes)}"
        )
    _check_pictures("the images", original)
    n = masked.shape[0]
    if errors is not None and len(errors) != n:
        raise ValueError(f"errors must have one value per image ({n}), got {len(errors)}")
    rows = {"masked": masked, label: reconstructed, **others, "original": original}
    fig, axes = plt.subplots(len(rows), n, figsize=(1.25 * n + 1.0, 1.4 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        shown = _as_display(images)
        for c in range(n):
            ax = axes[r, c]
            _picture(ax, shown[c])
            if c == 0:
                ax.set_ylabel(label, fontsize=10)
            if r == len(rows) - 1 and errors is not None:
                ax.set_xlabel(f"{float(errors[c]):.4f}", fontsize=7, color="#4b5563")
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold")
    fig.subplots_adjust(wspace=0.04, hspace=0.06)
    return _save(fig, path)


def masked_view(images: Tensor, patch_mask: Tensor, patch_size: int) -> Tensor:
    """Images with the masked patches painted over: a fine checkerboard for grey images (no
    garment has it, where a flat grey hid holes on grey clothes), a flat blue for RGB.

    Args:
        images: ``(n, C, H, W)`` in [0, 1].
        patch_mask: ``(n, H // patch_size * W // patch_size)`` bool, True = masked patch.
        patch_size: side of a square patch in pixels.
    """
    n, channels, height, width = images.shape
    grid = patch_mask.view(n, 1, height // patch_size, width // patch_size)
    pixels = grid.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)
    out = images.detach().clone()
    if channels == 3:
        fill = torch.tensor([0.35, 0.55, 0.85]).view(1, 3, 1, 1).to(out).expand_as(out)
    else:
        rows = torch.arange(height).view(height, 1)
        cols = torch.arange(width).view(1, width)
        fill = (0.25 + 0.5 * ((rows + cols) % 2)).to(out).expand_as(out)  # 0.25 / 0.75
    return torch.where(pixels.expand_as(out), fill, out)


def _tile(ax: plt.Axes, tiles: Tensor, symmetric: bool) -> AxesImage:
    """Draw ``(n, C, p, p)`` tiles as one mosaic on ``ax``, separated by thin gaps."""
    n, channels, p, _ = tiles.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    gap = 1
    canvas = torch.full((channels, rows * (p + gap) - gap, cols * (p + gap) - gap), float("nan"))
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[:, r * (p + gap) : r * (p + gap) + p, c * (p + gap) : c * (p + gap) + p] = tiles[i]
    if channels == 1:
        limit = float(torch.nan_to_num(canvas).abs().max()) or 1.0
        cmap = plt.get_cmap("RdBu_r" if symmetric else "gray").with_extremes(bad="white")
        vmin, vmax = (-limit, limit) if symmetric else (None, None)
        image = ax.imshow(
            canvas[0].numpy(), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"
        )
    else:
        lo, hi = torch.nan_to_num(canvas, nan=0.0).amin(), torch.nan_to_num(canvas).amax()
        shown = ((canvas - lo) / (hi - lo + 1e-12)).nan_to_num(1.0).permute(1, 2, 0)
        image = ax.imshow(shown.numpy(), interpolation="nearest")
    _bare(ax)
    return image


def plot_memories(patches: Tensor, path: str | Path, title: str = "") -> Path:
    """Hopfield memories decoded to pixel patches, as a mosaic (diverging colours, each tile
    scaled to its own maximum).

    Args:
        patches: ``(memories, C, p, p)`` decoded memories (any scale; zero is white).
        path: where to write the PNG.
        title: figure title.
    """
    _check_pictures("patches", patches, square=True)
    tiles = patches.detach().float().cpu()
    # Each memory on its own scale: the shape of a memory matters here, not its norm.
    tiles = tiles / tiles.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12)
    fig, ax = plt.subplots(figsize=(7, 7))
    image = _tile(ax, tiles, symmetric=True)
    if tiles.shape[1] == 1:  # colours are values; RGB tiles show their own colours
        bar = fig.colorbar(image, ax=ax, shrink=0.6, ticks=[-1, 0, 1])
        bar.set_label("pixel value / the memory's largest |value|")
    if title:
        ax.set_title(title, fontsize=11, fontweight="bold")
    return _save(fig, path)


def plot_updates(
    updates: dict[str, Tensor],
    steps: list[int],
    path: str | Path,
    title: str = "",
    states: Tensor | None = None,
) -> Path:
    """Each module's update decoded to pixels, for a few descent steps.

    Updates are drawn in a diverging map (red = brighter, blue = darker), one colour scale per
    row so early and late steps compare; each row's label gives its scale (the change drawn at
    full colour, in the updates' units).

    Args:
        updates: module name -> ``(len(steps), C, H, W)`` update images of one input image,
            e.g. ``{"attention": ..., "hopfield": ..., "total": ...}``.
        steps: the descent step of each column.
        path: where to write the PNG.
        title: figure title.
        states: optional ``(len(steps), C, H, W)`` images in [0, 1] decoded from the tokens at
            those steps, drawn in grey as the first row.
    """
    names = list(updates)
    # Checked before the figure exists: a refused call must not leave a figure open.
    given = {f"updates[{name!r}]": updates[name] for name in names}
    if states is not None:
        given["states"] = states
    for what, images in given.items():
        if images.shape[0] != len(steps):
            raise ValueError(
                f"{what} has {counted(images.shape[0], 'step')}, expected {len(steps)}"
            )
    offset = 0 if states is None else 1
    rows = len(names) + offset
    fig, axes = plt.subplots(
        rows, len(steps), figsize=(1.7 * len(steps) + 1.2, 1.8 * rows), squeeze=False
    )
    if states is not None:
        shown = _as_display(states)
        for c, step in enumerate(steps):
            ax = axes[0, c]
            _picture(ax, shown[c])
            ax.set_title(f"t = {step}", fontsize=9)
        axes[0, 0].set_ylabel("decoded $x(t)$", fontsize=10)
    for r, name in enumerate(names, start=offset):
        images = updates[name].detach().float().cpu()
        limit = float(images.abs().max()) or 1.0
        for c, step in enumerate(steps):
            ax = axes[r, c]
            shown = images[c].mean(0) if images.shape[1] > 1 else images[c, 0]
            ax.imshow(
                shown.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
            )
            _bare(ax, frame=True)
            if r == 0:
                ax.set_title(f"t = {step} \u2192 {step + 1}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{name}\n(±{limit:.2g})", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold")
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return _save(fig, path)


def plot_descent(
    frames: Tensor,
    steps: list[int],
    original: Tensor,
    path: str | Path,
    title: str = "",
    mse: Tensor | None = None,
    energy: Tensor | None = None,
    references: dict[str, float] | None = None,
    masked: Tensor | None = None,
) -> Path:
    """The holes filling in along the descent: one row per image, one column per step, the
    original last; below, optionally, the masked-pixel MSE and the energy at every step, so that
    one sees whether a lower energy is a better completion.

    Args:
        frames: ``(n, len(steps), C, H, W)`` images in [0, 1], each the input with its masked
            patches decoded from the tokens at that step.
        steps: the descent step of each column (0 = before the first update).
        original: ``(n, C, H, W)`` the unmasked images.
        path: where to write the PNG.
        title: figure title.
        mse: optional ``(steps + 1,)`` mean masked-pixel MSE at every step ``0..T``.
        energy: optional ``(steps + 1,)`` mean change of the total energy from step 0, same steps.
        references: optional name -> another method's masked MSE on the same images, drawn as a
            dotted level on the MSE axis (e.g. the interpolation baseline's).
        masked: optional ``(n, C, H, W)`` the inputs with their holes drawn, a first column.

    Shapes:
        - ``frames``: ``(n, S, C, H, W)`` with ``S = len(steps)``; ``original``: ``(n, C, H, W)``
    """
    if frames.dim() != 5 or frames.shape[1] != len(steps) or frames.shape[0] == 0:
        raise ValueError(
            f"frames must be (n, {counted(len(steps), 'step')}, C, H, W) with n >= 1,"
            f" got {tuple(frames.shape)}"
        )
    if original.shape != frames[:, 0].shape:
        raise ValueError(
            f"original must be {tuple(frames[:, 0].shape)} (one image per row of frames),"
            f" got {tuple(original.shape)}"
        )
    _check_pictures("the images", original)
    curves = {name: c for name, c in (("mse", mse), ("energy", energy)) if c is not None}
    lengths = {name: tuple(c.shape) for name, c in curves.items()}
    if len({*lengths.values()}) > 1 or any(len(shape) != 1 for shape in lengths.values()):
        raise ValueError(f"mse and energy must be (steps + 1,) vectors alike, got {lengths}")
    if curves and max(steps) >= len(next(iter(curves.values()))):
        raise ValueError(
            f"the curves have {counted(len(next(iter(curves.values()))), 'step')} but a column"
            f" shows step {max(steps)}"
        )
    if references and mse is None:
        raise ValueError("references are levels of the MSE curve: give mse too")
    if masked is not None and masked.shape != original.shape:
        raise ValueError(
            f"masked must be {tuple(original.shape)} like original, got {tuple(masked.shape)}"
        )
    first = [] if masked is None else [(_as_display(masked), "masked")]
    panels = [
        *first,
        *((_as_display(frames[:, c]), f"t = {step}") for c, step in enumerate(steps)),
        (_as_display(original), "original"),
    ]
    n, columns = frames.shape[0], len(panels)
    fig = plt.figure(figsize=(1.05 * columns + 1.0, 1.1 * n + (2.6 if curves else 0.4)))
    # The images sit close together; the curve panels get room for their tick labels.
    outer = fig.add_gridspec(
        2 if curves else 1, 1, height_ratios=[n, 2.2] if curves else [1], hspace=0.12
    )
    grid = outer[0].subgridspec(n, columns, wspace=0.04, hspace=0.06)
    for r in range(n):
        for c, (shown, label) in enumerate(panels):
            ax = fig.add_subplot(grid[r, c])
            _picture(ax, shown[r])
            if r == 0:
                ax.set_title(label, fontsize=9)
    if curves:
        # One panel per curve: on one pair of axes, two scales would make both start and end
        # together whatever they do.
        row = outer[1].subgridspec(1, len(curves), wspace=0.25)
        t = np.arange(len(next(iter(curves.values()))))
        for i, (name, values) in enumerate(curves.items()):
            ax = fig.add_subplot(row[0, i])
            colour = "#059669" if name == "mse" else TERM_COLOURS["total"]
            label = "masked-pixel MSE" if name == "mse" else "$E(t) - E(0)$"
            ax.plot(
                t,
                values.detach().double().cpu().numpy(),
                color=colour,
                marker="o",
                markersize=3.5,
                linewidth=2,
                label=label,
            )
            if name == "mse":
                for (other, level), style in zip(
                    (references or {}).items(), (":", "-.", (0, (1, 3))), strict=False
                ):
                    ax.axhline(
                        level,
                        color="#6b7280",
                        linestyle=style,
                        linewidth=1.5,
                        label=f"{other}'s MSE",
                    )
            ax.set_ylabel(label)
            ax.set_xlabel("descent step $t$")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.spines[["top", "right"]].set_visible(False)
            ax.legend(fontsize=8, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold", y=0.94)
    return _save(fig, path)


def plot_position_similarity(
    pos_embed: Tensor, grid: int, path: str | Path, title: str = ""
) -> Path:
    """Cosine similarity of each patch's positional embedding with every other, on the grid.

    Panel ``(r, c)`` shows, for the patch at row ``r`` and column ``c``, its cosine similarity
    with the embeddings of all ``grid x grid`` patches (the paper's Fig. 7 style).

    Args:
        pos_embed: ``(grid * grid, dim)`` positional embeddings of the patches (no CLS).
        grid: patches per side.
        path: where to write the PNG.
        title: figure title.
    """
    if pos_embed.dim() != 2 or pos_embed.shape[0] != grid * grid:
        raise ValueError(
            f"pos_embed must be ({grid * grid}, dim) for a {grid}x{grid} grid,"
            f" got {tuple(pos_embed.shape)}"
        )
    emb = torch.nn.functional.normalize(pos_embed.detach().float().cpu(), dim=-1)
    sim = (emb @ emb.T).view(grid, grid, grid, grid)
    # One mosaic (a NaN gap between panels) instead of grid^2 axes: fast and crisp.
    step = grid + 1
    canvas = torch.full((grid * step - 1, grid * step - 1), float("nan"))
    for r in range(grid):
        for c in range(grid):
            canvas[r * step : r * step + grid, c * step : c * step + grid] = sim[r, c]
    fig, ax = plt.subplots(figsize=(0.55 * grid + 2.0, 0.55 * grid + 1.2))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    image = ax.imshow(canvas.numpy(), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([step * c + (grid - 1) / 2 for c in range(grid)], range(grid))
    ax.set_yticks([step * r + (grid - 1) / 2 for r in range(grid)], range(grid))
    ax.set_xlabel("patch column")
    ax.set_ylabel("patch row")
    ax.tick_params(length=0, labelsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="cosine similarity")
    if title:
        ax.set_title(title, fontsize=11, fontweight="bold")
    return _save(fig, path)


def plot_completion(
    masked: Tensor, reconstructed: Tensor, original: Tensor, path: str | Path, title: str = ""
) -> Path:
    """One image side by side: masked | reconstructed | original.

    Shapes:
        - each: ``(C, H, W)`` in [0, 1]
    """
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
    panels = {"masked": masked, "reconstructed": reconstructed, "original": original}
    for ax, (label, image) in zip(axes, panels.items(), strict=True):
        _picture(ax, _as_display(image[None])[0])
        ax.set_title(label, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold")
    return _save(fig, path)


def plot_graph_attention(
    graphs: list[tuple[Tensor, int]],
    weights: list[Tensor],
    path: str | Path,
    titles: list[str] | None = None,
    title: str = "",
    label: str = "CLS attention (mean over heads)",
    center: float | None = None,
) -> Path:
    """Graphs drawn with every node coloured by a weight, e.g. how much the CLS token, from
    which the class is read, attends to it; one panel per graph, one colour scale for all.

    Args:
        graphs: ``(edge_index, num_nodes)`` of each graph, ``edge_index: (2, edges)``.
        weights: each graph's ``(num_nodes,)`` weights.
        path: where to write the PNG.
        titles: optional panel titles (e.g. true and predicted class).
        title: figure title.
        label: the colour bar's label.
        center: None: a sequential scale from 0 (weights >= 0); a value: a diverging scale
            centred on it (e.g. 1 for weights relative to a uniform share).
    """
    import networkx as nx
    from matplotlib.colors import Normalize, TwoSlopeNorm

    if not graphs or len(graphs) != len(weights) or (titles and len(titles) != len(graphs)):
        raise ValueError(
            f"give one weight vector (and title) per graph, at least one graph: got"
            f" {counted(len(graphs), 'graph')}, {counted(len(weights), 'weight vector')},"
            f" {counted(len(titles or []), 'title')}"
        )
    for i, ((edge_index, nodes), w) in enumerate(zip(graphs, weights, strict=True)):
        if tuple(w.shape) != (nodes,):
            raise ValueError(
                f"graph {i} has {counted(nodes, 'node')} but weights of shape {tuple(w.shape)}"
            )
        if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= nodes):
            raise ValueError(f"graph {i}: edge_index refers to nodes outside 0..{nodes - 1}")
    values = torch.cat([w.detach().float().cpu().flatten() for w in weights])
    if values.numel() == 0:
        raise ValueError("the graphs have no nodes to colour")
    low, high = float(values.min()), float(values.max())
    if center is None:
        norm, cmap = Normalize(0.0, high or 1.0), plt.get_cmap("viridis")
    else:  # symmetric about the centre, so that equal colours mean equal distances from it
        spread = max(high - center, center - low, 1e-3)
        norm, cmap = (
            TwoSlopeNorm(center, center - spread, center + spread),
            plt.get_cmap("coolwarm"),
        )
    columns = min(3, len(graphs))
    rows = math.ceil(len(graphs) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.6 * columns + 0.8, 3.4 * rows), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, ((edge_index, nodes), w) in enumerate(zip(graphs, weights, strict=True)):
        ax = axes.flat[i]
        graph = nx.Graph()
        graph.add_nodes_from(range(nodes))
        graph.add_edges_from(edge_index.t().tolist())
        graph.remove_edges_from(nx.selfloop_edges(graph))
        where = nx.spring_layout(graph, seed=0)  # the same drawing on every run
        nx.draw_networkx_edges(graph, where, ax=ax, edge_color="#9ca3af", width=1.2)
        nx.draw_networkx_nodes(
            graph,
            where,
            ax=ax,
            node_color=w.detach().float().cpu().numpy(),
            cmap=cmap,
            vmin=norm.vmin,
            vmax=norm.vmax,
            node_size=max(30.0, 300.0 / math.sqrt(max(nodes, 1))),
            edgecolors="#374151",
            linewidths=0.6,
        )
        if titles:
            ax.set_title(titles[i], fontsize=9)
    scale = plt.cm.ScalarMappable(cmap=cmap, norm=norm)
    fig.colorbar(scale, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label=label)
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold")
    return _save(fig, path)


# Normal and anomalous nodes in every score figure: blue and orange (colour-blind safe).
CLASS_COLOURS = {"normal": "#2563eb", "anomalous": "#ea580c"}


def plot_score_distributions(
    scores: dict[str, Tensor], labels: Tensor, path: str | Path, title: str = ""
) -> Path:
    """One panel per anomaly score (higher = more anomalous): the distribution of normal and of
    anomalous nodes (densities, 20 bins), with the score's AUROC and AUPRC on the same nodes.

    Args:
        scores: name -> ``(nodes,)`` scores.
        labels: ``(nodes,)`` 0 = normal, 1 = anomalous.
        path: where to write the PNG.
        title: figure title.
    """
    y = labels.detach().cpu().bool()
    for name, s in scores.items():
        if s.shape != y.shape:
            raise ValueError(
                f"scores[{name!r}] has shape {tuple(s.shape)}, labels {tuple(y.shape)}"
            )
    fig, axes = plt.subplots(
        1, len(scores), figsize=(5 * len(scores), 3.6), squeeze=False, constrained_layout=True
    )
    for ax, (name, s) in zip(axes[0], scores.items(), strict=True):
        s = s.detach().double().cpu()
        bins = np.linspace(float(s.min()), float(s.max()) + 1e-12, 21)
        for kind, chosen in (("normal", ~y), ("anomalous", y)):
            colour = CLASS_COLOURS[kind]
            density, _ = np.histogram(s[chosen].numpy(), bins=bins, density=True)
            ax.stairs(density, bins, fill=True, color=colour, alpha=0.25)
            ax.stairs(
                density, bins, color=colour, linewidth=1.6, label=f"{kind} ({int(chosen.sum())})"
            )
        ax.set_xlabel(f"{name} (higher = more anomalous)")
        ax.set_ylabel("density")
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False, fontsize=9)
        ax.text(
            0.02,
            0.97,
            f"AUROC {100 * auroc(s, y):.1f}\nAUPRC {100 * auprc(s, y):.1f}",
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#d1d5db"},
        )
    if title:
        fig.suptitle(title, fontsize=12, fontweight="bold")
    return _save(fig, path)
