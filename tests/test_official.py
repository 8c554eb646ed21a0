import numpy as np
import pytest
import torch

from energy_transformer.models.image import IMAGENET_MEAN, IMAGENET_STD
from energy_transformer.official import (
    OfficialFormatError,
    from_official_npz,
    to_official_npz,
)

H, Y, D, K, C, P, GRID = 2, 4, 16, 32, 3, 4, 2  # 8x8 RGB images, 4x4 patches
PATCH = C * P * P


def official_arrays(seed=0, channels=C, grid=GRID):
    rng = np.random.default_rng(seed)
    patch = channels * P * P
    return {
        "Wq": rng.normal(0, 0.3, (H, Y, D)),
        "Wk": rng.normal(0, 0.3, (H, Y, D)),
        "Xi": rng.normal(0, 0.3, (D, K)),
        "Wenc": rng.normal(0, 0.3, (patch, D)),
        "Benc": rng.normal(0, 0.1, (D,)),
        "Wdec": rng.normal(0, 0.3, (D, patch)),
        "Bdec": rng.normal(0, 0.1, (patch,)),
        "LNORM_gamma": np.array(1.3),
        "LNORM_bias": rng.normal(0, 0.1, (D,)),
        "CLS_token": rng.normal(0, 0.1, (1, 1, D)),
        "MASK_token": rng.normal(0, 0.1, (D,)),
        "POS_embed": rng.normal(0, 0.1, (grid * grid + 1, D)),
    }


def save(path, arrays):
    np.savez(path, **{k: v.astype(np.float32) for k, v in arrays.items()})
    return path


def by_hand(a, images, mask, steps, alpha, beta, mean, std, eps=1e-5):
    """The released model's forward pass written out from the arrays (float64 numpy)."""
    a = {k: v.astype(np.float32).astype(np.float64) for k, v in a.items()}
    x = (images - np.asarray(mean)[:, None, None]) / np.asarray(std)[:, None, None]
    b, n = x.shape[0], GRID * GRID
    patches = np.stack(
        [
            x[:, :, r * P : (r + 1) * P, c * P : (c + 1) * P].reshape(b, -1)
            for r in range(GRID)
            for c in range(GRID)
        ],
        axis=1,
    )  # (b, n, C*P*P), each patch flattened channel first
    tokens = patches @ a["Wenc"] + a["Benc"]
    tokens[mask] = a["MASK_token"]
    cls = np.broadcast_to(a["CLS_token"].reshape(1, 1, D), (b, 1, D))
    tokens = np.concatenate([cls, tokens], axis=1) + a["POS_embed"]

    def norm(t):
        centred = t - t.mean(-1, keepdims=True)
        s = np.sqrt((centred**2).mean(-1, keepdims=True) + eps)
        return a["LNORM_gamma"] * centred / s + a["LNORM_bias"]

    for _ in range(steps):
        g = norm(tokens)
        q = np.einsum("hyd,bnd->bhny", a["Wq"], g)
        k = np.einsum("hyd,bnd->bhny", a["Wk"], g)
        scores = beta * q @ k.transpose(0, 1, 3, 2)  # (b, h, query, key), self allowed
        omega = np.exp(scores - scores.max(-1, keepdims=True))
        omega /= omega.sum(-1, keepdims=True)
        att = np.einsum("bhcs,bhsy,hyd->bcd", omega, k, a["Wq"])
        att += np.einsum("bhcs,bhcy,hyd->bsd", omega, q, a["Wk"])
        hop = np.maximum(g @ a["Xi"], 0) @ a["Xi"].T
        tokens = tokens + alpha * (att + hop)
    out = norm(tokens)[:, 1:] @ a["Wdec"] + a["Bdec"]  # (b, n, C*P*P)
    image = np.zeros_like(x)
    for i in range(n):
        r, c = divmod(i, GRID)
        image[:, :, r * P : (r + 1) * P, c * P : (c + 1) * P] = out[:, i].reshape(b, C, P, P)
    return image * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]


def test_loaded_model_reproduces_the_forward_pass_by_hand(tmp_path):
    arrays = official_arrays()
    model = from_official_npz(save(tmp_path / "et.npz", arrays), steps=3, alpha=0.1)
    c = model.config
    assert (c["image_size"], c["patch_size"], c["channels"]) == (8, 4, 3)
    assert (c["dim"], c["heads"], c["head_dim"], c["memories"]) == (D, H, Y, K)
    assert c["exclude_self"] is False
    assert c["mean"] == list(IMAGENET_MEAN) and c["std"] == list(IMAGENET_STD)
    torch.testing.assert_close(model.block.norm.gamma, torch.tensor(1.3))

    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (2, C, 8, 8))
    mask = np.array([[True, False, False, True], [False, True, False, False]])
    expected = by_hand(arrays, images, mask, 3, 0.1, 1 / np.sqrt(Y), IMAGENET_MEAN, IMAGENET_STD)
    out = model.double().complete(torch.from_numpy(images), torch.from_numpy(mask))
    # float32 storage of gamma (as log gamma) and of the pixel statistics: ~1e-7 relative
    np.testing.assert_allclose(out.prediction.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_round_trip_through_our_writer(tmp_path):
    model = from_official_npz(save(tmp_path / "a.npz", official_arrays(2)))
    again = from_official_npz(to_official_npz(model, tmp_path / "b.npz"))
    for (name, p), q in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_grey_model_and_paper_masking_ratios(tmp_path):
    arrays = official_arrays(channels=1, grid=7)
    with pytest.raises(ValueError, match="pass mean and std"):
        from_official_npz(save(tmp_path / "g.npz", arrays))
    model = from_official_npz(tmp_path / "g.npz", mean=(0.5,), std=(0.25,))
    assert (model.channels, model.patch_size, model.image_size) == (1, 4, 28)
    assert (model.selected, model.masked) == (25, 22)  # 100/196 and 90/196 of 49


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("Xi"), r"lacks Xi of the released layout \(Wq, .*\); it holds Bdec, "),
        (lambda a: a.update(Wk=np.zeros((H, Y, D + 1))), r"Wk must have shape \(2, 4, 16\)"),
        (lambda a: a.update(Wdec=np.zeros((PATCH, D))), r"Wdec must have shape \(16, 48\)"),
        (lambda a: a.update(Wenc=np.zeros((50, D))), "neither 3 \\* p \\* p nor p \\* p"),
        (lambda a: a.update(POS_embed=np.zeros((4, D))), "square number of patches"),
        (lambda a: a.update(LNORM_gamma=np.array(-0.5)), "must be > 0"),
        (lambda a: a.update(LNORM_gamma=np.array(0.0)), "LNORM_gamma is 0.0; it must be > 0"),
        (lambda a: a.update(LNORM_gamma=np.ones(2)), "must be a scalar"),
        (lambda a: a.update(CLS_token=np.zeros((2, D))), r"CLS_token must hold a \(16,\) vector"),
        (lambda a: a.update(Benc=np.full(D, np.nan)), "Benc contains NaN"),
    ],
)
def test_malformed_files(tmp_path, change, message):
    arrays = official_arrays()
    change(arrays)
    with pytest.raises(ValueError, match=message):
        from_official_npz(save(tmp_path / "bad.npz", arrays))


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        from_official_npz(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(OfficialFormatError, match="not a readable"):
        from_official_npz(tmp_path / "junk.npz")
    arrays = official_arrays()
    arrays["Wq"] = np.array([object()] * 4)  # would need pickle to read
    np.savez(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(OfficialFormatError):
        from_official_npz(tmp_path / "pickled.npz")


def test_integer_arrays_are_refused(tmp_path):
    arrays = official_arrays()
    np.savez(tmp_path / "int.npz", **{**arrays, "Wq": np.ones((H, Y, D), dtype=np.int64)})
    with pytest.raises(OfficialFormatError, match="Wq must be floating point, got dtype int64"):
        from_official_npz(tmp_path / "int.npz")


def test_leading_singleton_axes_and_a_writer_into_a_new_folder(tmp_path):
    arrays = official_arrays(3)
    flat = from_official_npz(save(tmp_path / "flat.npz", arrays))
    arrays["POS_embed"] = arrays["POS_embed"][None]  # (1, N + 1, D), as flax keeps it
    arrays["MASK_token"] = arrays["MASK_token"][None, None]
    batched = from_official_npz(save(tmp_path / "batched.npz", arrays))
    torch.testing.assert_close(batched.pos_embed, flat.pos_embed)
    torch.testing.assert_close(batched.mask_token, flat.mask_token)
    # The tokens keep their roles: CLS is arrays' CLS_token, MASK arrays' MASK_token.
    expected_cls = torch.from_numpy(arrays["CLS_token"].astype(np.float32).reshape(D))
    expected_mask = torch.from_numpy(arrays["MASK_token"].astype(np.float32).reshape(D))
    torch.testing.assert_close(flat.cls_token.reshape(D), expected_cls)
    torch.testing.assert_close(flat.mask_token.reshape(D), expected_mask)
    written = to_official_npz(flat, tmp_path / "new" / "folder" / "et.npz")
    assert written.is_file()


def test_masked_default_never_exceeds_selected(tmp_path):
    # 4 patches: the paper's ratios give 2 selected and 2 masked; with 1 selected, 1 masked.
    path = save(tmp_path / "et.npz", official_arrays())
    assert (from_official_npz(path).selected, from_official_npz(path).masked) == (2, 2)
    model = from_official_npz(path, selected=1)
    assert (model.selected, model.masked) == (1, 1)
