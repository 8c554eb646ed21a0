import pytest
import torch

from energy_transformer.models.features import (
    DegreeEncoding,
    FeatureScaler,
    piecewise_linear_encoding,
)


def test_fit_standardises_continuous_columns_only():
    # Columns: one-hot (0/1), continuous, constant 5.
    x = torch.tensor([[1.0, 2.0, 5.0], [0.0, 4.0, 5.0], [1.0, 6.0, 5.0], [0.0, 8.0, 5.0]])
    scaler = FeatureScaler(3).fit(x)
    # Column 1: mean 5, population std sqrt(((-3)^2 + 1 + 1 + 9) / 4) = sqrt(5).
    assert scaler.mean.tolist() == [0.0, 5.0, 0.0]
    assert scaler.std.tolist() == pytest.approx([1.0, 5**0.5, 1.0])
    out = scaler(x)
    assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(out[:, 2], x[:, 2])
    assert out[:, 1].mean().abs() < 1e-6 and out[:, 1].std(correction=0) == pytest.approx(1.0)


def test_identity_until_fitted_and_saved_with_the_weights():
    x = torch.randn(5, 2) * 10
    assert torch.equal(FeatureScaler(2)(x), x)
    fitted = FeatureScaler(2).fit(x)
    loaded = FeatureScaler(2)
    loaded.load_state_dict(fitted.state_dict())
    assert torch.equal(loaded(x), fitted(x))


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match=r"shape \(nodes, 3\)"):
        FeatureScaler(3).fit(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least one node"):
        FeatureScaler(3).fit(torch.zeros(0, 3))


def test_checkpoint_without_scaler_loads_as_identity():
    from torch import nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.scaler = FeatureScaler(2)
            self.linear = nn.Linear(2, 1)

    old = {k: v for k, v in Model().state_dict().items() if not k.startswith("scaler.")}
    model = Model()
    model.scaler.fit(torch.randn(6, 2) * 5)
    model.load_state_dict(old)  # strict: the scaler's keys may be absent as a pair
    x = torch.randn(3, 2)
    assert torch.equal(model.scaler(x), x)
    half = {**old, "scaler.mean": torch.zeros(2)}
    with pytest.raises(RuntimeError, match=r"scaler\.std"):
        Model().load_state_dict(half)  # one of the two is a corrupt checkpoint


def test_degree_encoding_counts_distinct_keys_without_self_loops():
    # key -> query edges into node 0 from 1, 2 (twice) and 0 itself; node 3 has none.
    edge_index = torch.tensor([[1, 2, 2, 0, 0], [0, 0, 0, 0, 1]])
    encoding = DegreeEncoding(max_degree=1, dim=3)
    assert encoding.degrees(edge_index, 4).tolist() == [2, 1, 0, 0]
    out = encoding(edge_index, 4)
    assert out.shape == (4, 3)
    weight = encoding.embed.weight
    torch.testing.assert_close(out, weight[torch.tensor([1, 1, 0, 0])])  # 2 capped to 1
    out.sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="max_degree must be >= 1"):
        DegreeEncoding(0, 3)


def test_degree_encoding_log2_buckets():
    # In-degrees 0, 1, 2, 3 and 7 fall in buckets 0, 1, 1, 2 and 3.
    keys = {1: 1, 2: 2, 3: 3, 4: 7}
    src = torch.cat([torch.arange(10, 10 + d) for d in keys.values()])
    dst = torch.cat([torch.full((d,), v) for v, d in keys.items()])
    encoding = DegreeEncoding(max_degree=5, dim=2, log2=True)
    out = encoding(torch.stack([src, dst]), 20)
    torch.testing.assert_close(out[:5], encoding.embed.weight[torch.tensor([0, 1, 1, 2, 3])])


def test_continuous_column_holding_zeros_and_ones_is_standardised():
    # Only a column of nothing but 0 and 1 passes unchanged; 0 and 1 among other values do not.
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [5.0, 0.0]])
    scaler = FeatureScaler(2).fit(x)
    # Column 0: mean 2, population variance (4 + 1 + 0 + 9) / 4 = 3.5.
    assert scaler.mean.tolist() == [2.0, 0.0]
    assert scaler.std.tolist() == pytest.approx([3.5**0.5, 1.0])
    torch.testing.assert_close(scaler(x)[:, 0], (x[:, 0] - 2.0) / 3.5**0.5)


def test_piecewise_linear_encoding_by_hand():
    # Column 0: quantiles 0, 2, 4 for bins=2; column 1: 0/1 flags; column 2: a constant.
    x = torch.tensor(
        [[0.0, 1.0, 7.0], [1.0, 0.0, 7.0], [2.0, 1.0, 7.0], [3.0, 0.0, 7.0], [4.0, 1.0, 7.0]]
    )
    out = piecewise_linear_encoding(x, bins=2)
    expected = torch.tensor(
        [[0.0, 0.0], [0.5, 0.0], [1.0, 0.0], [1.0, 0.5], [1.0, 1.0]]  # fills bins left to right
    )
    torch.testing.assert_close(out, torch.cat([expected, x[:, 1:]], 1))


def test_piecewise_linear_encoding_merges_tied_quantiles_and_ignores_scale():
    torch.manual_seed(0)
    skewed = torch.cat([torch.zeros(60), torch.rand(40)])  # 60% zeros: the low quantiles tie
    x = torch.stack([skewed, torch.randn(100)], 1)
    out = piecewise_linear_encoding(x, bins=10)
    # Column 0: deciles 0-5 tie at 0, 6-10 are distinct (6 sits between the last zero and
    # the first positive value): 6 edges, 5 bins. Column 1: all 10.
    assert out.shape == (100, 5 + 10)
    assert ((out >= 0) & (out <= 1)).all()
    rescaled = torch.stack([3 * skewed + 1, 0.5 * x[:, 1] - 2], 1)  # as standardising does
    torch.testing.assert_close(piecewise_linear_encoding(rescaled, bins=10), out)


@pytest.mark.parametrize(
    ("x", "bins", "message"),
    [
        (torch.zeros(4, 2), 0, "bins must be an int >= 1, got 0"),
        (torch.zeros(4, 2), 2.0, "bins must be an int >= 1, got 2.0"),
        (torch.zeros(0, 2), 2, r"x must be \(nodes, features\) with nodes > 0, got \(0, 2\)"),
        (torch.zeros(4), 2, r"got \(4,\)"),
    ],
)
def test_piecewise_linear_encoding_refuses_bad_input(x, bins, message):
    with pytest.raises(ValueError, match=message):
        piecewise_linear_encoding(x, bins)
