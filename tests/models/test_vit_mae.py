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


def test_mlp_dim_follows_the_et_memories():
    config = matching_vit_config({"dim": 16, "heads": 2, "memories": 40, "steps": 3})
    assert (config["mlp_dim"], config["depth"]) == (40, 3)
    assert matching_vit_config({"dim": 16, "memories": None})["mlp_dim"] == 64  # 4 * dim


def test_layer_is_pre_ln_gelu_and_decoder_reads_the_final_layer_norm():
    torch.manual_seed(0)
    vit = ViTMaskedAutoencoder(
        image_size=4, patch_size=2, dim=8, heads=2, depth=1, mlp_dim=12, selected=2, masked=1
    ).eval()
    layer = vit.layers[0]
    with torch.no_grad():
        for norm in (layer.norm1, layer.norm2, vit.decoder_norm):
            norm.weight.normal_()
            norm.bias.normal_()
    x = torch.randn(2, 5, 8)

    def layer_norm(t, norm):
        centred = t - t.mean(-1, keepdim=True)
        return norm.weight * centred / (centred.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt() + (
            norm.bias
        )

    h = layer_norm(x, layer.norm1)
    x1 = x + layer.self_attn(h, h, h, need_weights=False)[0]
    hidden = layer.linear1(layer_norm(x1, layer.norm2))
    gelu = 0.5 * hidden * (1 + torch.erf(hidden / 2**0.5))  # exact GELU
    expected = x1 + layer.linear2(gelu)
    with torch.no_grad():
        torch.testing.assert_close(vit.process(x), expected)
        decoded = vit.decode(expected)
    torch.testing.assert_close(
        decoded, vit.decoder(layer_norm(expected[:, 1:], vit.decoder_norm)), atol=1e-5, rtol=1e-5
    )
