"""``nn.LSTM`` and ``nn.GRU``: PyTorch's parameter names, shapes and init; outputs, final
states and every gradient against PyTorch with the same weights (1 and 2 layers,
batch_first both ways, with and without initial states); unbatched input; dropout
between layers; errors that name the shapes."""

from __future__ import annotations

import numpy as np
import pytest

import pyrt
from pyrt import nn

IN, H = 5, 7


@pytest.mark.parametrize("kind,gates", [("LSTM", 4), ("GRU", 3)])
def test_parameter_names_shapes_and_init(kind: str, gates: int) -> None:
    pyrt.manual_seed(0)
    layer = getattr(nn, kind)(IN, 64, num_layers=2)
    shapes = {name: p.shape for name, p in layer.named_parameters()}
    assert shapes == {
        "weight_ih_l0": (gates * 64, IN), "weight_hh_l0": (gates * 64, 64),
        "bias_ih_l0": (gates * 64,), "bias_hh_l0": (gates * 64,),
        "weight_ih_l1": (gates * 64, 64), "weight_hh_l1": (gates * 64, 64),
        "bias_ih_l1": (gates * 64,), "bias_hh_l1": (gates * 64,),
    }
    values = np.concatenate([p.data.ravel() for p in layer.parameters()])
    assert values.dtype == np.float32
    assert np.abs(values).max() <= 1 / 8 and np.abs(values).max() > 0.12  # U(+-1/sqrt(64))
    no_bias = getattr(nn, kind)(IN, 4, bias=False)
    assert [n for n, _ in no_bias.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]


def test_repr() -> None:
    assert repr(nn.LSTM(8, 16)) == "LSTM(8, 16)"
    assert repr(nn.GRU(8, 16, num_layers=2, bias=False, batch_first=True, dropout=0.5)) == (
        "GRU(8, 16, num_layers=2, bias=False, batch_first=True, dropout=0.5)")


def _copy_weights(theirs, ours) -> None:
    for name, p in theirs.named_parameters():
        getattr(ours, name).data[...] = p.detach().numpy()


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch(kind: str, num_layers: int, batch_first: bool, with_state: bool,
                       dtype) -> None:
    torch = pytest.importorskip("torch")
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    theirs = getattr(torch.nn, kind)(IN, H, num_layers=num_layers, batch_first=batch_first,
                                     dtype=tdtype)
    ours = getattr(nn, kind)(IN, H, num_layers=num_layers, batch_first=batch_first, dtype=dtype)
    _copy_weights(theirs, ours)
    rng = np.random.default_rng(0)
    T, B = 6, 3
    x = rng.standard_normal((B, T, IN) if batch_first else (T, B, IN)).astype(dtype)
    states = [rng.standard_normal((num_layers, B, H)).astype(dtype) for _ in range(2)]
    x_ours, x_theirs = pyrt.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    s_ours = [pyrt.tensor(s, requires_grad=True) for s in states]
    s_theirs = [torch.tensor(s, requires_grad=True) for s in states]
    lstm = kind == "LSTM"

    def run(module, x, s):
        if not with_state:
            return module(x)
        return module(x, (s[0], s[1]) if lstm else s[0])

    out_ours, final_ours = run(ours, x_ours, s_ours)
    out_theirs, final_theirs = run(theirs, x_theirs, s_theirs)
    finals_ours = list(final_ours) if lstm else [final_ours]
    finals_theirs = list(final_theirs) if lstm else [final_theirs]
    # A loss that touches every output: the gradient reaches h_n and c_n separately.
    weights = [rng.standard_normal(o.shape).astype(dtype) for o in [out_ours, *finals_ours]]
    loss_ours = sum((o * pyrt.tensor(w)).sum() for o, w in zip([out_ours, *finals_ours], weights,
                                                                 strict=True))
    loss_theirs = sum((o * torch.tensor(w)).sum() for o, w in zip([out_theirs, *finals_theirs],
                                                                   weights, strict=True))
    loss_ours.backward()
    loss_theirs.backward()

    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == np.float64 else {"rtol": 1e-4, "atol": 1e-5}
    assert out_ours.shape == tuple(out_theirs.shape)
    np.testing.assert_allclose(out_ours.data, out_theirs.detach().numpy(), **tol)
    for a, b in zip(finals_ours, finals_theirs, strict=True):
        assert a.shape == tuple(b.shape)
        np.testing.assert_allclose(a.data, b.detach().numpy(), **tol)
    np.testing.assert_allclose(x_ours.grad.data, x_theirs.grad.numpy(), **tol)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(getattr(ours, name).grad.data, p.grad.numpy(), **tol,
                                   err_msg=name)
    if with_state:
        for a, b in zip(s_ours[:len(finals_ours)], s_theirs, strict=False):
            np.testing.assert_allclose(a.grad.data, b.grad.numpy(), **tol)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_unbatched_input_matches_batch_of_one(kind: str) -> None:
    layer = getattr(nn, kind)(IN, H, num_layers=2)
    x = pyrt.tensor(np.random.default_rng(0).standard_normal((4, IN)).astype(np.float32))
    out, final = layer(x)
    out_b, final_b = layer(x.unsqueeze(1))
    assert out.shape == (4, H)
    np.testing.assert_allclose(out.data, out_b.data[:, 0], rtol=1e-6)
    h, h_b = (final[0], final_b[0]) if kind == "LSTM" else (final, final_b)
    assert h.shape == (2, H)
    np.testing.assert_allclose(h.data, h_b.data[:, 0], rtol=1e-6)


def test_gru_gradcheck_through_module_in_float64() -> None:
    pyrt.manual_seed(0)
    gru = nn.GRU(3, 4, num_layers=2, dtype=np.float64)
    x = pyrt.tensor(np.random.default_rng(0).standard_normal((3, 2, 3)), requires_grad=True)
    h0 = pyrt.tensor(np.random.default_rng(1).standard_normal((2, 2, 4)), requires_grad=True)
    # The parameters are perturbed in place by gradcheck, so the module sees each change.
    assert pyrt.gradcheck(lambda x, h, *params: gru(x, h)[0], [x, h0, *gru.parameters()])


def test_dropout_between_layers_only_in_training() -> None:
    pyrt.manual_seed(0)
    lstm = nn.LSTM(IN, H, num_layers=2, dropout=0.5)
    x = pyrt.tensor(np.random.default_rng(0).standard_normal((5, 2, IN)).astype(np.float32))
    lstm.eval()
    first, _ = lstm(x)
    second, _ = lstm(x)
    np.testing.assert_array_equal(first.data, second.data)
    lstm.train()
    dropped, _ = lstm(x)
    assert not np.allclose(dropped.data, first.data)
    one_layer = nn.LSTM(IN, H, dropout=0.5)  # nothing between layers to drop
    np.testing.assert_array_equal(one_layer(x)[0].data, one_layer(x)[0].data)


def test_state_dict_round_trip_with_torch_names() -> None:
    torch = pytest.importorskip("torch")
    theirs = torch.nn.LSTM(IN, H, num_layers=2)
    ours = nn.LSTM(IN, H, num_layers=2)
    ours.load_state_dict({k: pyrt.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    for name, p in theirs.named_parameters():
        np.testing.assert_array_equal(getattr(ours, name).data, p.detach().numpy())


def test_errors_name_the_shapes() -> None:
    lstm = nn.LSTM(IN, H, num_layers=2, batch_first=True)
    x = pyrt.zeros(3, 4, IN)
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, seq_len, input_size\)"
                                         r".* got shape \(3, 4, 5, 1\)"):
        lstm(pyrt.zeros(3, 4, IN, 1))
    with pytest.raises(ValueError, match=r"input.size\(-1\) must be equal to input_size. "
                                         r"Expected 5, got 6 \(input shape \(3, 4, 6\)\)"):
        lstm(pyrt.zeros(3, 4, 6))
    with pytest.raises(ValueError, match=r"expected h0 of shape \(2, 3, 7\), got \(1, 3, 7\)"):
        lstm(x, (pyrt.zeros(1, 3, H), pyrt.zeros(2, 3, H)))
    with pytest.raises(ValueError, match=r"expected c0 of shape \(2, 3, 7\), got \(2, 4, 7\)"):
        lstm(x, (pyrt.zeros(2, 3, H), pyrt.zeros(2, 4, H)))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h0, c0\)"):
        lstm(x, pyrt.zeros(2, 3, H))
    with pytest.raises(TypeError, match="input is float64 but the parameters are float32"):
        lstm(pyrt.zeros(3, 4, IN, dtype=np.float64))
    gru = nn.GRU(IN, H)
    with pytest.raises(ValueError, match=r"GRU: expected hx of shape \(1, 4, 7\), got \(1, 3, 7\)"):
        gru(pyrt.zeros(2, 4, IN), pyrt.zeros(1, 3, H))
    with pytest.raises(ValueError, match="hidden_size and num_layers must be >= 1"):
        nn.GRU(IN, 0)
