import pytest
import torch

from energy_transformer.models.interpolation import PatchInterpolation


def test_harmonic_fill_is_exact_for_a_linear_ramp_in_an_interior_hole():
    # a linear function is harmonic: the Laplace fill of an interior hole reproduces it
    ramp = torch.linspace(0, 1, 12).expand(12, 12)
    images = (0.3 * ramp + 0.5 * ramp.T)[None, None].double()
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 5] = mask[0, 6] = True  # two interior 3x3 patches of a 4x4 grid
    out = PatchInterpolation(3, iterations=2000).complete(images, mask)
    torch.testing.assert_close(out.images, images, atol=1e-6, rtol=0)


def test_constant_image_and_visible_pixels_untouched():
    images = torch.rand(2, 3, 8, 8)
    images[1] = 0.7
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[:, 0] = True
    out = PatchInterpolation(4).complete(images, mask)
    torch.testing.assert_close(out.images[:, :, 4:], images[:, :, 4:])
    torch.testing.assert_close(out.images[1], images[1])


def test_nearest_copies_the_nearest_visible_pixel():
    images = torch.zeros(1, 1, 4, 4)
    images[0, 0, :, 2:] = 1.0  # right half white
    images[0, 0, 2:, :2] = 0.25  # bottom-left grey
    mask = torch.tensor([[True, False, False, False]])  # hide the top-left 2x2 patch
    out = PatchInterpolation(2, method="nearest").complete(images, mask)
    # (0, 1) is 1 away from (0, 2) = 1.0 and 2 away from (2, 1) = 0.25; (1, 0) the other way
    assert out.images[0, 0, 0, 1] == 1.0 and out.images[0, 0, 1, 0] == 0.25
    torch.testing.assert_close(out.images[0, 0, 2:], images[0, 0, 2:])


def test_errors():
    with pytest.raises(ValueError, match="method"):
        PatchInterpolation(4, method="bicubic")
    with pytest.raises(ValueError, match="does not fit"):
        PatchInterpolation(4).complete(torch.rand(1, 1, 8, 8), torch.zeros(1, 9, dtype=torch.bool))


def test_nearest_uses_euclidean_distance():
    # 5x5 pixels, patch size 1; each image keeps two visible pixels, pixel (0, 0) is hidden.
    images = torch.zeros(2, 1, 5, 5)
    hidden = torch.ones(2, 5, 5, dtype=torch.bool)
    # Image 0: (0, 4) at distance 4 and (3, 2) at sqrt(13) ~ 3.61 (Manhattan 5): (3, 2) wins.
    # Image 1: (0, 4) at distance 4 and (3, 3) at sqrt(18) ~ 4.24 (Chebyshev 3): (0, 4) wins.
    for b, (far, near) in enumerate([((0, 4), (3, 2)), ((0, 4), (3, 3))]):
        images[b, 0][far], images[b, 0][near] = 0.2, 0.9
        hidden[b][far] = hidden[b][near] = False
    out = PatchInterpolation(1, method="nearest").complete(images, hidden.view(2, 25))
    assert out.images[:, 0, 0, 0].tolist() == pytest.approx([0.9, 0.2])


@pytest.mark.parametrize("method", ["harmonic", "nearest"])
def test_image_without_visible_pixels_gets_the_fill_value(method):
    images = torch.rand(2, 1, 4, 4)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0] = True  # image 0: everything hidden; image 1: nothing hidden
    out = PatchInterpolation(2, method=method, fill=0.3).complete(images, mask)
    torch.testing.assert_close(out.images[0], torch.full((1, 4, 4), 0.3))
    torch.testing.assert_close(out.images[1], images[1])


def test_harmonic_starts_from_the_mean_visible_value():
    # Zero Jacobi iterations leave the initial guess: the mean of each image's visible pixels.
    images = torch.zeros(1, 2, 4, 4)
    images[0, 0, 2:] = torch.tensor([1.0, 2.0, 3.0, 6.0])  # visible bottom half, channel 0
    images[0, 1, 2:] = 0.8
    mask = torch.tensor([[True, True, False, False]])  # hide the top half
    out = PatchInterpolation(2, iterations=0).complete(images, mask)
    torch.testing.assert_close(out.images[0, 0, :2], torch.full((2, 4), 3.0))
    torch.testing.assert_close(out.images[0, 1, :2], torch.full((2, 4), 0.8))
