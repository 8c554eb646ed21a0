import matplotlib.pyplot as plt
import pytest
import torch

from energy_transformer import plots
from energy_transformer.nn import EnergyTerms


def _is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_energy_descent(tmp_path):
    e = -torch.rand(13, 5).cumsum(0)
    path = plots.plot_energy_descent(EnergyTerms(e, 0.5 * e, 1.5 * e), tmp_path / "e.png", "t")
    assert _is_png(path)
    with pytest.raises(ValueError, match=r"energies.attention must be a \(steps \+ 1, batch\)"):
        plots.plot_energy_descent(EnergyTerms(e[0], e[0], e[0]), tmp_path / "x.png")
    with pytest.raises(ValueError, match="hopfield has shape"):
        plots.plot_energy_descent(EnergyTerms(e, e[:3], e), tmp_path / "x.png")
    # The path returned is the file written: .png added to a bare name, a folder refused.
    bare = plots.plot_energy_descent(EnergyTerms(e, e, e), tmp_path / "plain")
    assert bare == tmp_path / "plain.png" and _is_png(bare)
    with pytest.raises(ValueError, match="is a folder: give the picture's file name"):
        plots.plot_energy_descent(EnergyTerms(e, e, e), tmp_path)


def test_energy_descent_ticks_whole_steps(tmp_path, monkeypatch):
    # One step (T = 1) used to get ticks at 0.2, 0.4, ...: steps are whole numbers.
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    e = -torch.rand(2, 3).cumsum(0)
    plots.plot_energy_descent(EnergyTerms(e, e, e), tmp_path / "e.png")
    for ax in closed[0].axes:
        ticks = [t for t in ax.get_xticks() if 0 <= t <= 1]
        assert ticks == [0.0, 1.0]


def test_image_figures(tmp_path):
    images = torch.rand(4, 1, 8, 8)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:, 0] = True
    masked = plots.masked_view(images, mask, 4)
    assert torch.equal(masked[:, :, 4:], images[:, :, 4:])
    assert set(masked[:, :, :4, :4].unique().tolist()) == {0.25, 0.75}  # the hole's pattern
    assert _is_png(plots.plot_reconstructions(masked, images, images, tmp_path / "r.png"))
    assert _is_png(plots.plot_memories(torch.randn(10, 1, 4, 4), tmp_path / "m.png"))
    updates = {"attention": torch.randn(3, 1, 8, 8), "hopfield": torch.randn(3, 1, 8, 8)}
    assert _is_png(plots.plot_updates(updates, [0, 1, 5], tmp_path / "u.png", states=images[:3]))
    assert _is_png(plots.plot_position_similarity(torch.randn(9, 6), 3, tmp_path / "p.png"))
    assert _is_png(plots.plot_completion(images[0], images[1], images[2], tmp_path / "c.png"))
    with pytest.raises(ValueError, match="one shape"):
        plots.plot_reconstructions(masked, images[:2], images, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"pos_embed must be \(9, dim\)"):
        plots.plot_position_similarity(torch.randn(8, 6), 3, tmp_path / "x.png")
    for bad in (torch.randn(0, 1, 4, 4), torch.randn(5, 2, 4, 4), torch.randn(5, 1, 4, 6)):
        with pytest.raises(ValueError, match=r"patches must be \(n, C, p, p\) square patches"):
            plots.plot_memories(bad, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"the images must be \(n, C, H, W\) images"):
        plots.plot_reconstructions(*[torch.rand(2, 2, 8, 8)] * 3, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"errors must have one value per image \(4\), got 2"):
        plots.plot_reconstructions(masked, images, images, tmp_path / "x.png", errors=mask[:2, 0])


def test_energy_descent_draws_each_samples_change_from_step_zero(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    total = torch.tensor([[3.0, 5.0], [1.0, 2.0], [0.0, 1.0]])  # 2 steps, 2 samples
    terms = EnergyTerms(attention=2 * total, hopfield=total - 4, total=total)
    plots.plot_energy_descent(terms, tmp_path / "e.png")
    panels = closed[0].axes  # total, attention, hopfield
    # change from step 0: sample 1 goes 0, -2, -3 and sample 2 goes 0, -3, -4: mean 0, -2.5, -3.5
    assert panels[0].lines[0].get_ydata().tolist() == [0.0, -2.5, -3.5]
    assert panels[1].lines[0].get_ydata().tolist() == [0.0, -5.0, -7.0]
    assert panels[2].lines[0].get_ydata().tolist() == [0.0, -2.5, -3.5]  # a shift changes nothing
    # the mean start energy and its mean change: (3 + 5) / 2 = 4, then (0 + 1) / 2 - 4 = -3.5
    assert panels[0].texts[0].get_text() == "mean $E(0)$ = 4\nmean $\\Delta E$ = -3.5"
    assert panels[2].texts[0].get_text() == "mean $E(0)$ = 0\nmean $\\Delta E$ = -3.5"
    assert panels[0].get_ylabel() == "$E(t) - E(0)$ per sample\n(mean ± std over 2 samples)"
    # one sample (a whole graph's energy): no spread to speak of
    one = EnergyTerms(attention=total[:, :1], hopfield=total[:, :1], total=total[:, :1])
    plots.plot_energy_descent(one, tmp_path / "one.png")
    assert closed[1].axes[0].get_ylabel() == "$E(t) - E(0)$"
    plots.plot_energy_descent(terms, tmp_path / "nodes.png", unit="nodes")
    assert closed[2].axes[0].get_ylabel() == "$E(t) - E(0)$ per node\n(mean ± std over 2 nodes)"


def test_masked_view_paints_the_patches_in_row_major_order():
    images = torch.rand(1, 1, 8, 8)
    mask = torch.tensor([[False, True, False, False]])  # patch 1: top row, right column
    out = plots.masked_view(images, mask, 4)
    # a checkerboard over the hole: 0.25 where row + column is even, 0.75 where odd
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4, 8), indexing="ij")
    assert torch.equal(out[0, 0, :4, 4:], 0.25 + 0.5 * ((rows + cols) % 2).float())
    keep = torch.ones(8, 8, dtype=torch.bool)
    keep[:4, 4:] = False
    assert torch.equal(out[0, 0][keep], images[0, 0][keep])
    rgb = torch.rand(1, 3, 8, 8)
    out = plots.masked_view(rgb, torch.tensor([[False, False, True, False]]), 4)  # bottom left
    for channel, fill in enumerate([0.35, 0.55, 0.85]):
        assert torch.allclose(out[0, channel, 4:, :4], torch.tensor(fill))
    assert torch.equal(out[0, :, :4], rgb[0, :, :4])
    assert torch.equal(out[0, :, 4:, 4:], rgb[0, :, 4:, 4:])


def test_updates_with_a_wrong_number_of_steps_are_refused(tmp_path):
    open_before = plt.get_fignums()
    updates = {"attention": torch.randn(3, 1, 8, 8), "hopfield": torch.randn(2, 1, 8, 8)}
    with pytest.raises(ValueError, match=r"updates\['hopfield'\] has 2 steps, expected 3"):
        plots.plot_updates(updates, [0, 1, 5], tmp_path / "u.png")
    updates["hopfield"] = torch.randn(4, 1, 8, 8)  # one too many would be dropped silently
    with pytest.raises(ValueError, match=r"updates\['hopfield'\] has 4 steps, expected 3"):
        plots.plot_updates(updates, [0, 1, 5], tmp_path / "u.png")
    updates["hopfield"] = torch.randn(3, 1, 8, 8)
    with pytest.raises(ValueError, match=r"states has 2 steps, expected 3"):
        plots.plot_updates(updates, [0, 1, 5], tmp_path / "u.png", states=torch.rand(2, 1, 8, 8))
    assert not (tmp_path / "u.png").exists()
    assert plt.get_fignums() == open_before  # refused before a figure was opened


def test_grey_memories_have_a_colour_scale_and_rgb_ones_none(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    plots.plot_memories(torch.randn(4, 1, 4, 4), tmp_path / "grey.png")
    plots.plot_memories(torch.randn(4, 3, 4, 4), tmp_path / "rgb.png")
    grey, rgb = closed
    assert len(grey.axes) == 2 and len(rgb.axes) == 1  # the mosaic, and the bar beside it
    bar = grey.axes[1]
    assert bar.get_ylabel() == "pixel value / the memory's largest |value|"
    assert [t.get_text() for t in bar.get_yticklabels()] == ["−1", "0", "1"]


def test_each_update_row_names_its_colour_scale(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    small = torch.zeros(2, 1, 4, 4)
    small[1, 0, 0, 0] = -0.003  # the row's largest change, whatever its sign
    big = torch.full((2, 1, 4, 4), 0.25)
    plots.plot_updates({"attention": small, "hopfield": big}, [0, 11], tmp_path / "u.png")
    (fig,) = closed
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["attention\n(±0.003)", "hopfield\n(±0.25)"]


def _framed(ax) -> bool:
    return any(spine.get_visible() for spine in ax.spines.values())


def test_grey_pictures_are_bare_and_update_maps_keep_a_frame(tmp_path, monkeypatch):
    # Grey images, as in every picture: no ticks, no frame. The diverging update maps, white
    # at 0 like the page, keep their frame.
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    updates = {"attention": torch.randn(2, 1, 4, 4)}
    plots.plot_updates(updates, [0, 1], tmp_path / "u.png", states=torch.rand(2, 1, 4, 4))
    images = torch.rand(3, 1, 8, 8)
    plots.plot_completion(images[0], images[1], images[2], tmp_path / "c.png")
    updated, completed = closed
    states, maps = updated.axes[:2], updated.axes[2:]
    for ax in [*updated.axes, *completed.axes]:
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
    assert not any(_framed(ax) for ax in [*states, *completed.axes])
    assert all(_framed(ax) for ax in maps)


def test_score_distributions_show_each_scores_auroc_and_auprc(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    labels = torch.tensor([0, 0, 0, 1, 1, 0])
    perfect = torch.tensor([0.1, 0.2, 0.3, 0.9, 0.8, 0.0])
    # anomalous at 0.5 and 0.15 rank above 4 and 1 of the 4 normal nodes: AUROC 5/8; by
    # descending score A N N N A N: AUPRC = (1/1 + 2/5) / 2 = 0.7
    mixed = torch.tensor([0.1, 0.2, 0.3, 0.5, 0.15, 0.4])
    scores = {"classifier": perfect, "energy": mixed}
    plots.plot_score_distributions(scores, labels, tmp_path / "s.png", "title")
    (fig,) = closed
    boxes = [ax.texts[0].get_text() for ax in fig.axes]
    assert boxes[0] == "AUROC 100.0\nAUPRC 100.0"
    assert boxes[1] == "AUROC 62.5\nAUPRC 70.0"
    assert fig.axes[1].get_xlabel() == "energy (higher = more anomalous)"
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["normal (4)", "anomalous (2)"]
    with pytest.raises(ValueError, match=r"scores\['energy'\] has shape \(5,\), labels \(6,\)"):
        plots.plot_score_distributions({"energy": mixed[:5]}, labels, tmp_path / "x.png")


def test_the_memories_colour_bar_spans_minus_one_to_one_whatever_their_scale(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    # Memories of scales 1 to 4, all positive: each is drawn over its own largest |value|, so
    # the colours still run from -1 to 1 with 0 in the middle (not the data's own 0.x to 4).
    scales = torch.arange(1.0, 5.0).view(4, 1, 1, 1)
    plots.plot_memories(scales * (0.1 + torch.rand(4, 1, 4, 4)), tmp_path / "m.png")
    (fig,) = closed
    image = fig.axes[0].images[0]
    assert image.get_clim() == (-1.0, 1.0)
    assert float(torch.tensor(image.get_array().compressed()).max()) == pytest.approx(1.0)


def test_reconstructions_show_the_baselines_between_the_model_and_the_original(
    tmp_path, monkeypatch
):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    images = torch.rand(3, 1, 8, 8)
    flat = torch.full((3, 1, 8, 8), 0.5)
    errors = torch.tensor([0.1, 0.2, 0.3])
    path = tmp_path / "r.png"
    plots.plot_reconstructions(
        images, images, images, path, errors=errors, baselines={"flat": flat}, label="ET"
    )
    (fig,) = closed
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["masked", "ET", "flat", "original"]
    assert [ax.get_xlabel() for ax in fig.axes[-3:]] == ["0.1000", "0.2000", "0.3000"]
    flat_row = fig.axes[6:9]  # row-major: the third row
    assert all((ax.images[0].get_array() == 0.5).all() for ax in flat_row)
    with pytest.raises(
        ValueError, match=r"got \(3, 1, 8, 8\), \(3, 1, 8, 8\), \(3, 1, 8, 8\), \(2"
    ):
        plots.plot_reconstructions(images, images, images, path, baselines={"flat": flat[:2]})


def test_descent_figure(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    frames, original = torch.rand(3, 4, 1, 8, 8), torch.rand(3, 1, 8, 8)
    mse, energy = torch.tensor([0.3, 0.2, 0.15, 0.1, 0.1]), torch.tensor([0.0, -1, -2, -2.5, -3])
    levels = {"interpolation": 0.12}
    path = plots.plot_descent(
        frames, [0, 1, 2, 4], original, tmp_path / "d.png", "t", mse, energy, levels
    )
    assert _is_png(path)
    axes = closed[0].axes
    assert len(axes) == 3 * 5 + 2  # 3 rows of 4 steps + the original, the MSE and energy panels
    assert [ax.get_title() for ax in axes[:5]] == ["t = 0", "t = 1", "t = 2", "t = 4", "original"]
    shown = axes[6].images[0].get_array()  # row 1, step 1
    assert torch.equal(torch.from_numpy(shown.data), frames[1, 1, 0])
    assert axes[-2].lines[0].get_ydata().tolist() == pytest.approx(mse.tolist())
    assert axes[-1].lines[0].get_ydata().tolist() == energy.tolist()
    assert list(axes[-2].lines[1].get_ydata()) == [0.12, 0.12]  # the reference's level
    assert axes[-2].get_legend().texts[1].get_text() == "interpolation's MSE"
    assert _is_png(plots.plot_descent(frames, [0, 1, 2, 3], original, tmp_path / "bare.png"))
    assert len(closed[1].axes) == 15  # no curves, no curve panel
    with pytest.raises(ValueError, match=r"frames must be \(n, 3 steps, C, H, W\)"):
        plots.plot_descent(frames, [0, 1, 2], original, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"original must be \(3, 1, 8, 8\)"):
        plots.plot_descent(frames, [0, 1, 2, 3], original[:2], tmp_path / "x.png")
    with pytest.raises(ValueError, match="mse and energy must be"):
        plots.plot_descent(
            frames, [0, 1, 2, 3], original, tmp_path / "x.png", mse=mse, energy=mse[:4]
        )
    with pytest.raises(ValueError, match="references are levels of the MSE curve: give mse"):
        plots.plot_descent(frames, [0, 1, 2, 3], original, tmp_path / "x.png", references=levels)
    with pytest.raises(ValueError, match="the curves have 5 steps but a column shows step 7"):
        plots.plot_descent(frames, [0, 1, 2, 7], original, tmp_path / "x.png", mse=mse)


def test_graph_attention_figure_colours_each_node_by_its_weight(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    ring = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    pair = torch.tensor([[0], [1]])
    weights = [torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.5, 0.25])]
    titles = ["class 0, predicted 0 (p 0.90)", "class 1, predicted 0 (p 0.60)"]
    path = plots.plot_graph_attention([(ring, 4), (pair, 2)], weights, tmp_path / "a", titles, "t")
    assert path == tmp_path / "a.png" and _is_png(path)
    panels = [ax for ax in closed[0].axes if ax.get_title() in titles]
    assert [ax.get_title() for ax in panels] == titles
    for ax, w in zip(panels, weights, strict=True):
        nodes = ax.collections[-1]  # drawn after the edges
        assert list(nodes.get_array()) == pytest.approx(w.tolist())
        assert nodes.norm.vmin == 0 and nodes.norm.vmax == pytest.approx(0.5)  # one scale
    with pytest.raises(ValueError, match="one weight vector"):
        plots.plot_graph_attention([(ring, 4)], weights, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"graph 0 has 4 nodes but weights of shape \(2,\)"):
        plots.plot_graph_attention([(ring, 4)], weights[1:], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"graph 0: edge_index refers to nodes outside 0..2"):
        plots.plot_graph_attention([(ring, 3)], [torch.ones(3)], tmp_path / "x.png")


def test_graph_attention_figure_centres_a_diverging_scale(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    ring = torch.tensor([[0, 1, 2], [1, 2, 0]])
    relative = [torch.tensor([0.7, 1.0, 1.3]), torch.tensor([0.9, 1.1, 1.0])]
    plots.plot_graph_attention([(ring, 3), (ring, 3)], relative, tmp_path / "a.png", center=1.0)
    nodes = closed[0].axes[0].collections[-1]
    # symmetric about 1: the farthest weight (0.7 or 1.3, 0.3 away) sets both ends
    assert (nodes.norm.vmin, nodes.norm.vmax) == pytest.approx((0.7, 1.3))
    assert nodes.cmap.name == "coolwarm"
    with pytest.raises(ValueError, match="no nodes to colour"):
        plots.plot_graph_attention(
            [(torch.zeros(2, 0, dtype=torch.long), 0)], [torch.ones(0)], tmp_path / "x.png"
        )


def test_descent_figure_checks_the_last_step_the_rows_and_the_curves_shape(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    frames, original = torch.rand(2, 3, 1, 8, 8), torch.rand(2, 1, 8, 8)
    mse = torch.tensor([0.3, 0.2, 0.1])  # steps 0, 1, 2
    # a column at step 3 has no point on curves of steps 0..2 (len 3): refused, not drawn
    with pytest.raises(ValueError, match="the curves have 3 steps but a column shows step 3"):
        plots.plot_descent(frames, [0, 1, 3], original, tmp_path / "x.png", mse=mse)
    # the last step itself is fine
    assert _is_png(plots.plot_descent(frames, [0, 1, 2], original, tmp_path / "ok.png", mse=mse))
    # no rows: refused as such, before the original is looked at
    with pytest.raises(ValueError, match=r"frames must be \(n, 3 steps, C, H, W\) with n >= 1"):
        plots.plot_descent(frames[:0], [0, 1, 2], original[:0], tmp_path / "x.png")
    # curves must be vectors, one value per step, even when both have the same shape
    column = mse[:, None]  # (3, 1)
    with pytest.raises(ValueError, match="mse and energy must be"):
        plots.plot_descent(
            frames, [0, 1, 2], original, tmp_path / "x.png", mse=column, energy=column
        )
    # energy alone is drawn on the curve panel itself: no twin axis, no MSE axis
    energy = torch.tensor([0.0, -1.0, -1.5])
    plots.plot_descent(frames, [0, 1, 2], original, tmp_path / "e.png", energy=energy)
    axes = closed[-1].axes
    assert len(axes) == 2 * 4 + 1  # 2 rows of 3 steps + the original, one curve panel
    assert axes[-1].lines[0].get_ydata().tolist() == energy.tolist()
    assert axes[-1].get_ylabel() == "$E(t) - E(0)$"


def test_descent_figure_shows_the_masked_input_first(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    frames, original = torch.rand(2, 3, 1, 8, 8), torch.rand(2, 1, 8, 8)
    masked = plots.masked_view(original, torch.tensor([[True, False, False, False]] * 2), 4)
    plots.plot_descent(frames, [0, 1, 2], original, tmp_path / "d.png", masked=masked)
    axes = closed[0].axes
    assert [ax.get_title() for ax in axes[:5]] == ["masked", "t = 0", "t = 1", "t = 2", "original"]
    assert torch.equal(torch.from_numpy(axes[5].images[0].get_array().data), masked[1, 0])
    with pytest.raises(ValueError, match=r"masked must be \(2, 1, 8, 8\) like original"):
        plots.plot_descent(frames, [0, 1, 2], original, tmp_path / "x.png", masked=masked[:1])


def test_energy_descent_prints_start_and_change_alike(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    total = torch.tensor([[-5446.0], [-9062.0]])  # one sample: start -5446, change -3616
    plots.plot_energy_descent(EnergyTerms(total, total, total), tmp_path / "e.png")
    text = closed[0].axes[0].texts[0].get_text()
    assert text == "mean $E(0)$ = -5446\nmean $\\Delta E$ = -3616"  # not -3.62e+03
