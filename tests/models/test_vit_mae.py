import pytest
import torch

from energy_transformer.models.image import image_preset
from energy_transformer.models.vit_mae import ViTMaskedAutoencoder, matching_vit_config


def test_matching_config_and_parameter_count():
    et = image_preset("fashion-mnist")
    vit = ViTMaskedAutoencoder(**matching_vit_config(et))
    assert len(vit.layers) == et["steps"] == 12
    d, f = et["dim"], et["memories"]
    # per layer: attention (4 D^2 + 4 D), MLP (2 D F + F + D), two layer norms (4 D)
    per_layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d
    frame = 2 * (16 * d) + d + 16 + 2 * d + 50 * d + 2 * d  # encoder, decoder, tokens, final LN
    assert sum(p.numel() for p in vit.parameters()) == 12 * per_layer + frame


def test_forward_loss_backward():
    torch.manual_seed(0)
    vit = ViTMaskedAutoencoder(
        image_size=8,
        patch_size=2,
        dim=16,
        heads=2,
        depth=2,
        selected=9,
        masked=6,
        mean=(0.5,),
        std=(0.25,),
    )
    images = torch.rand(3, 1, 8, 8)
    selected, mask = vit.sample_mask(3)
    assert vit(images, mask).shape == (3, 16, 4)
    loss = vit.loss(images, selected, mask)
    loss.backward()
    assert vit.layers[0].linear1.weight.grad is not None
    out = vit.complete(images, mask)
    assert out.images.shape == images.shape and out.trajectory is None


def test_bad_configuration():
    with pytest.raises(ValueError, match="heads"):
        ViTMaskedAutoencoder(dim=10, heads=3)
    with pytest.raises(ValueError, match="depth"):
        ViTMaskedAutoencoder(depth=0)
