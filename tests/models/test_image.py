import pytest
import torch

from energy_transformer.models.image import (
    ImageEnergyTransformer,
    create_model,
    image_preset,
    list_presets,
    patch_mask_to_pixels,
)


def tiny(**kw) -> ImageEnergyTransformer:
    config = dict(
        image_size=8,
        patch_size=2,
        channels=1,
        dim=16,
        heads=2,
        head_dim=4,
        memories=32,
        steps=3,
        selected=9,
        masked=6,
        mean=(0.5,),
        std=(0.25,),
    )
    return ImageEnergyTransformer(**{**config, **kw})


def test_imagenet_preset_has_the_papers_parameter_count():
    model = create_model("imagenet")
    total = sum(p.numel() for p in model.parameters())
    block = sum(p.numel() for p in model.block.parameters())
    # 2*12*64*768 (Wq, Wk) + 3072*768 (xi) + 1 + 768 (layer norm)
    assert block == 3_539_713
    # + encoder and decoder (768*768 + 768 each), CLS, MASK, 197 positional embeddings
    assert total == 4_873_729
    assert round(total / 1e6, 2) == 4.87 and round(block / 1e6, 2) == 3.54
    assert model.patches == 196 and model.patch_dim == 768
    assert model.selected == 100 and model.masked == 90
    assert torch.allclose(model.block.attention.beta, torch.full((12,), 1 / 8))


def test_presets_registry():
    assert {"imagenet", "fashion-mnist"} <= set(list_presets())
    preset = image_preset("fashion-mnist")
    preset["dim"] = -1  # a copy: the registry is untouched
    assert image_preset("fashion-mnist")["dim"] == 128
    assert create_model("fashion-mnist", steps=4).steps == 4
    with pytest.raises(ValueError, match="unknown image preset 'cifar'"):
        image_preset("cifar")


def test_patchify_round_trip_and_channel_first_order():
    model = tiny(channels=3, mean=(0.5,) * 3, std=(0.2,) * 3)
    images = torch.rand(2, 3, 8, 8)
    patches = model.patchify(images)
    assert patches.shape == (2, 16, 12)
    torch.testing.assert_close(model.unpatchify(patches), images)
    # patch (row 1, col 2) flattened C x p x p
    expected = images[1, :, 2:4, 4:6].reshape(-1)
    torch.testing.assert_close(patches[1, 1 * 4 + 2], expected)


def test_patch_mask_to_pixels():
    mask = torch.zeros(1, 4, dtype=torch.bool)
    mask[0, 1] = True  # top-right patch of a 2x2 grid
    pixels = patch_mask_to_pixels(mask, 3, channels=2)
    assert pixels.shape == (1, 2, 6, 6)
    assert pixels[:, :, :3, 3:].all() and pixels.sum() == 2 * 9


def test_masking_counts_and_subset():
    model = tiny()
    selected, masked = model.sample_mask(50, torch.Generator().manual_seed(0))
    assert selected.shape == masked.shape == (50, 16)
    assert (selected.sum(1) == 9).all() and (masked.sum(1) == 6).all()
    assert not (masked & ~selected).any()
    # different images get different masks
    assert len({tuple(m.tolist()) for m in masked}) > 40
    again = model.sample_mask(50, torch.Generator().manual_seed(0))[1]
    assert torch.equal(masked, again)


def test_forward_shapes_and_mask_token():
    torch.manual_seed(0)
    model = tiny(steps=0)
    images = torch.rand(3, 1, 8, 8)
    mask = torch.zeros(3, 16, dtype=torch.bool)
    mask[:, 5] = True
    tokens = model.embed(images, mask)
    assert tokens.shape == (3, 17, 16)
    # a masked patch's token is MASK + its position, whatever the image
    torch.testing.assert_close(tokens[:, 6], (model.mask_token + model.pos_embed[6]).expand(3, -1))
    assert model(images, mask).shape == (3, 16, 4)


def test_loss_is_mse_over_selected_patches_by_hand():
    torch.manual_seed(0)
    model = tiny()
    images = torch.rand(2, 1, 8, 8)
    selected, mask = model.sample_mask(2, torch.Generator().manual_seed(1))
    prediction = model(images, mask)
    target = (images - 0.5) / 0.25
    errs = []
    for b in range(2):
        for a in range(16):
            if selected[b, a]:
                r, c = divmod(a, 4)
                patch = target[b, 0, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].reshape(-1)
                errs.append((prediction[b, a] - patch).pow(2))
    expected = torch.cat(errs).mean()
    torch.testing.assert_close(model.loss(images, selected, mask), expected)
    rmse = tiny(loss="rmse")
    rmse.load_state_dict(model.state_dict())
    torch.testing.assert_close(rmse.loss(images, selected, mask), expected.sqrt())


def test_complete_keeps_visible_patches_and_returns_trajectory():
    torch.manual_seed(0)
    model = tiny()
    images = torch.rand(2, 1, 8, 8)
    mask = torch.zeros(16, dtype=torch.bool)
    mask[:4] = True  # the top row of patches
    out = model.complete(images, mask, steps=5, alpha=0.05, return_trajectory=True)
    assert out.images.shape == images.shape and out.mask.shape == (2, 16)
    torch.testing.assert_close(out.images[:, :, 2:], images[:, :, 2:])
    torch.testing.assert_close(out.images[:, :, :2], out.prediction[:, :, :2])
    assert out.trajectory.tokens.shape == (6, 2, 17, 16)
    assert out.trajectory.energies.total.shape == (6, 2)
    assert model.complete(images, mask).trajectory is None


def test_fill_refuses_tokens_of_another_batch_or_size():
    model = tiny()
    images = torch.rand(3, 1, 8, 8)
    mask = torch.zeros(3, 16, dtype=torch.bool)
    tokens = model.complete(images, mask, return_trajectory=True).trajectory.tokens[-1]
    filled, _ = model.fill(images, mask, tokens)
    assert filled.shape == images.shape
    # One image's tokens broadcast silently into all three images.
    for bad in (tokens[:1], tokens[:, 1:], tokens[..., :8]):
        with pytest.raises(ValueError, match=r"tokens must have shape \(3, 17, 16\) \(CLS first\)"):
            model.fill(images, mask, bad)
    with pytest.raises(ValueError, match=r"patch mask must have shape \(3, 16\)"):
        model.fill(images, mask[:2], tokens)
    with pytest.raises(ValueError, match="pixel values in"):
        model.fill(images * 255, mask, tokens)


def test_fill_takes_one_mask_for_every_image_as_complete_does():
    model = tiny()
    images = torch.rand(3, 1, 8, 8)
    shared = torch.arange(16) % 3 == 0  # (patches,): the same patches hidden in each image
    tokens = model.complete(images, shared, return_trajectory=True).trajectory.tokens[-1]
    filled, prediction = model.fill(images, shared, tokens)
    expected = model.fill(images, shared.expand(3, 16), tokens)
    torch.testing.assert_close(filled, expected[0])
    torch.testing.assert_close(prediction, expected[1])


def test_energy_decreases_during_the_models_descent():
    torch.manual_seed(0)
    model = tiny(steps=12).double()
    # weights large enough for the dynamics to matter
    with torch.no_grad():
        model.block.attention.wq.normal_(0, 0.3)
        model.block.attention.wk.normal_(0, 0.3)
        model.block.hopfield.xi.normal_(0, 0.2)
    images = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    _, mask = model.sample_mask(4, torch.Generator().manual_seed(0))
    out = model.complete(images, mask, alpha=0.01, return_trajectory=True)
    energy = out.trajectory.energies.total
    assert (energy[1:] < energy[:-1]).all()
    assert (energy[0] - energy[-1]).min() > 1e-3


def test_gradient_paths_agree_in_float64():
    torch.manual_seed(0)
    closed = tiny().double()
    auto = tiny(gradient="autograd").double()
    auto.load_state_dict(closed.state_dict())
    images = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    selected, mask = closed.sample_mask(2, torch.Generator().manual_seed(0))
    l1, l2 = closed.loss(images, selected, mask), auto.loss(images, selected, mask)
    torch.testing.assert_close(l1, l2)
    g1 = torch.autograd.grad(l1, closed.block.attention.wq)[0]
    g2 = torch.autograd.grad(l2, auto.block.attention.wq)[0]
    torch.testing.assert_close(g1, g2)


def test_module_updates_and_memory_patches():
    torch.manual_seed(0)
    model = tiny()
    tokens = model.embed(torch.rand(2, 1, 8, 8), torch.zeros(2, 16, dtype=torch.bool))
    updates = model.module_updates(tokens)
    assert set(updates) == {"attention", "hopfield", "total"}
    assert updates["total"].shape == (2, 1, 8, 8)
    torch.testing.assert_close(updates["total"], updates["attention"] + updates["hopfield"])
    assert model.memory_patches().shape == (32, 1, 2, 2)


def test_module_updates_are_the_change_of_the_decoded_picture():
    torch.manual_seed(0)
    model = tiny().double()
    images = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    tokens = model.embed(images, torch.zeros(2, 16, dtype=torch.bool))
    total = model.module_updates(tokens)["total"]
    # the block's step, taken a tiny fraction t of the way: the picture moves by t * total
    step = -model.alpha * model.block.energy_grad(tokens)
    t = 1e-6
    moved = model.unpatchify(model.decode(tokens + t * step) - model.decode(tokens)) / t
    torch.testing.assert_close(total, moved, rtol=1e-4, atol=1e-8)
    # not the update pushed through the decoder's weight alone (the layer norm in between)
    straight = model.unpatchify(step[:, 1:] @ model.decoder.weight.T)
    assert not torch.allclose(total, straight, rtol=0.1, atol=1e-6)


def test_bad_inputs():
    model = tiny()
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 1, 8, 8\)"):
        model.complete(torch.rand(2, 3, 8, 8), torch.zeros(16, dtype=torch.bool))
    with pytest.raises(TypeError, match="floating-point"):
        model.loss(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\], got \[0, 255\]"):
        model.loss(torch.linspace(0, 255, 128).reshape(2, 1, 8, 8))  # 8-bit values as floats
    with pytest.raises(ValueError, match="images contain NaN or inf"):
        model.loss(torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match=r"patch mask must have shape \(2, 16\)"):
        model.complete(torch.rand(2, 1, 8, 8), torch.zeros(2, 15, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        model.complete(torch.rand(2, 1, 8, 8), torch.zeros(2, 16))
    with pytest.raises(ValueError, match="must divide"):
        tiny(patch_size=3)
    with pytest.raises(ValueError, match="masked"):
        tiny(masked=10, selected=9)
    with pytest.raises(ValueError, match="gradient"):
        tiny(gradient="numeric")
    with pytest.raises(ValueError, match="one finite value per channel"):
        tiny(mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="one finite value per channel"):
        tiny(mean=(float("nan"),))
    with pytest.raises(ValueError, match="alpha must be finite"):
        tiny(alpha=float("inf"))
    images = torch.rand(2, 1, 8, 8)
    with pytest.raises(TypeError, match="images are torch.float64 but the model's weights are"):
        model.complete(images.double(), torch.zeros(16, dtype=torch.bool))
    with pytest.raises(ValueError, match="empty batch"):
        model.complete(images[:0], torch.zeros(16, dtype=torch.bool))
    selected, mask = model.sample_mask(2)
    with pytest.raises(ValueError, match=r"selected must have shape \(2, 16\)"):
        model.loss(images, selected[:1], mask)
    with pytest.raises(ValueError, match="batch must be a positive int, got -1"):
        model.sample_mask(-1)


def test_embeddings_are_not_weight_decayed_by_the_trainer():
    from energy_transformer.train.trainer import _param_groups

    model = tiny()
    decay, no_decay = _param_groups(model, 0.05)
    assert any(p is model.pos_embed for p in no_decay["params"])
    assert not any(p is model.pos_embed for p in decay["params"])
    assert any(p is model.block.hopfield.xi for p in decay["params"])


def test_cls_token_gets_its_own_positional_embedding():
    torch.manual_seed(0)
    model = tiny()
    with torch.no_grad():
        model.pos_embed.normal_()  # large enough to tell apart
    tokens = model.embed(torch.rand(2, 1, 8, 8), torch.zeros(2, 16, dtype=torch.bool))
    torch.testing.assert_close(tokens[:, 0], (model.cls_token + model.pos_embed[0]).expand(2, -1))


def test_decoder_reads_each_patch_token_through_the_layer_norm():
    torch.manual_seed(0)
    model = tiny()
    with torch.no_grad():
        model.block.norm.delta.normal_()
        model.block.norm.log_gamma.fill_(0.7)
    tokens = torch.randn(2, 17, 16)
    out = model.decode(tokens)
    assert out.shape == (2, 16, 4)
    # Energy layer norm by hand: gamma * (x - mean) / sqrt(var + eps) + delta, per token.
    norm = model.block.norm
    x = tokens[:, 1:]
    centred = x - x.mean(-1, keepdim=True)
    g = norm.gamma * centred / (centred.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
    expected = (g + norm.delta) @ model.decoder.weight.T + model.decoder.bias
    torch.testing.assert_close(out, expected)
    # Patch a is read from token a + 1; the CLS token (0) is never decoded.
    moved = tokens.clone()
    moved[:, 0] += 5.0
    moved[:, 4] += 5.0 * torch.randn(16)
    changed = (model.decode(moved) - out).abs().amax(dim=(0, 2)) > 1e-4
    assert changed.tolist() == [a == 3 for a in range(16)]


def test_completion_is_in_pixel_units_with_hand_placed_pixels():
    model = tiny(steps=0)
    with torch.no_grad():
        model.decoder.weight.zero_()
        # Every patch predicts the normalised pixels (0, 1, -1, 2) in row-major p x p order.
        model.decoder.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0]))
    images = torch.rand(1, 1, 8, 8)
    mask = torch.zeros(16, dtype=torch.bool)
    mask[6] = True  # patch (row 1, col 2): pixels [2:4, 4:6]
    out = model.complete(images, mask)
    # pixel = normalised * std + mean = v * 0.25 + 0.5
    patch = torch.tensor([[0.5, 0.75], [0.25, 1.0]])
    torch.testing.assert_close(out.prediction[0, 0, 2:4, 4:6], patch)
    torch.testing.assert_close(out.prediction[0, 0, 6:8, 0:2], patch)
    torch.testing.assert_close(out.images[0, 0, 2:4, 4:6], patch)
    visible = torch.ones(8, 8, dtype=torch.bool)
    visible[2:4, 4:6] = False
    torch.testing.assert_close(out.images[0, 0][visible], images[0, 0][visible])


def test_memory_patches_by_hand():
    model = tiny()
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.weight[1, 0] = 2.0  # pixel 1 of a patch = (row 0, col 1) reads dim 0
        model.decoder.bias.fill_(7.0)  # a bias is not part of a direction
    xi = model.block.hopfield.xi  # (memories, dim)
    patches = model.memory_patches()
    assert patches.shape == (32, 1, 2, 2)
    expected = torch.zeros(32, 1, 2, 2)
    expected[:, 0, 0, 1] = 2.0 * xi[:, 0].detach()
    torch.testing.assert_close(patches, expected)
