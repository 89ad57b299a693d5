"""max_pool2d / avg_pool2d: finite differences, PyTorch as the oracle, ties, NaN, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import pyrt
import pyrt.nn.functional as F

# (N, C, H, W), kernel, stride, padding
GEOMETRIES = [
    pytest.param((2, 3, 6, 6), 2, None, 0, id="2x2_tiles"),
    pytest.param((2, 3, 5, 5), 2, None, 0, id="2x2_uneven"),
    pytest.param((2, 3, 5, 5), 3, 2, 1, id="3x3_stride2_pad1_overlap"),
    pytest.param((2, 3, 7, 6), (2, 3), (1, 2), (1, 0), id="nonsquare"),
    pytest.param((1, 2, 4, 4), 1, 1, 0, id="1x1"),
    pytest.param((2, 3, 5, 5), 5, None, 2, id="kernel_is_input"),
]


def _distinct(shape, seed=0):
    # A permutation keeps every window's maximum unique and far from its
    # neighbours, which finite differences need.
    values = np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape)
    return pyrt.tensor(values * 0.1, requires_grad=True)


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize(("shape", "kernel", "stride", "padding"), GEOMETRIES)
def test_max_pool2d_gradcheck(shape, kernel, stride, padding):
    x = _distinct(shape)
    assert pyrt.gradcheck(lambda x: F.max_pool2d(x, kernel, stride, padding), [x])


def test_max_pool2d_dilation_gradcheck():
    assert pyrt.gradcheck(lambda x: F.max_pool2d(x, 2, 1, 1, dilation=2), [_distinct((2, 3, 6, 5))])


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(("shape", "kernel", "stride", "padding"), GEOMETRIES)
def test_avg_pool2d_gradcheck(shape, kernel, stride, padding, count_include_pad):
    x = pyrt.tensor(np.random.default_rng(0).standard_normal(shape), requires_grad=True)
    assert pyrt.gradcheck(lambda x: F.avg_pool2d(x, kernel, stride, padding,
                                                 count_include_pad=count_include_pad),
                          [x])


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize(("shape", "kernel", "stride", "padding"), [
    *GEOMETRIES, pytest.param((4, 8, 30, 30), 2, None, 0, id="cifar_conv_out")])
def test_pools_match_torch(shape, kernel, stride, padding, layout):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    # Rounded values make ties common, so the tie rule is exercised too.
    data = np.round(rng.standard_normal(shape), 1).astype(np.float32)
    data[0, 0] = 0.0  # a whole channel of ties, like ReLU output
    if layout == "channels_last":
        data = _channels_last(data)
    for name in ("max_pool2d", "avg_pool2d"):
        x = pyrt.tensor(data, requires_grad=True)
        out = getattr(F, name)(x, kernel, stride, padding)
        grad = rng.standard_normal(out.shape).astype(np.float32)
        out.backward(grad)
        tx = torch.tensor(np.ascontiguousarray(data), requires_grad=True)
        t_out = getattr(torch.nn.functional, name)(tx, kernel, stride, padding)
        t_out.backward(torch.tensor(grad))
        np.testing.assert_allclose(out.data, t_out.detach().numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_avg_pool2d_count_include_pad_false_matches_torch():
    torch = pytest.importorskip("torch")
    data = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    x = pyrt.tensor(data, requires_grad=True)
    out = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    out.sum().backward()
    tx = torch.tensor(data, requires_grad=True)
    t_out = torch.nn.functional.avg_pool2d(tx, 3, 2, 1, count_include_pad=False)
    t_out.sum().backward()
    np.testing.assert_allclose(out.data, t_out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-12)


def test_max_pool2d_ties_send_the_gradient_to_the_first_maximum():
    x = pyrt.tensor(np.array([[[[1.0, 3.0], [3.0, 3.0]]]]), requires_grad=True)
    F.max_pool2d(x, 2).backward(np.ones((1, 1, 1, 1)))
    assert x.grad.data.ravel().tolist() == [0.0, 1.0, 0.0, 0.0]


def test_max_pool2d_nan_wins_like_torch():
    # PyTorch's rule `val > maxval || isnan(val)`: the last NaN in scan order.
    x = pyrt.tensor(np.array([[[[np.nan, 1.0], [np.nan, 2.0]]]]), requires_grad=True)
    out = F.max_pool2d(x, 2)
    out.backward(np.ones((1, 1, 1, 1)))
    assert np.isnan(out.item())
    assert x.grad.data.ravel().tolist() == [0.0, 0.0, 1.0, 0.0]


def test_max_pool2d_pads_with_minus_infinity():
    x = pyrt.tensor(-np.ones((1, 1, 2, 2)))
    assert F.max_pool2d(x, 3, 1, 1).data.ravel().tolist() == [-1.0] * 4


def test_avg_pool2d_counts_padding_by_default():
    x = pyrt.ones(1, 1, 2, 2)
    assert F.avg_pool2d(x, 2, 1, 1).data[0, 0, 0, 0] == 0.25
    assert F.avg_pool2d(x, 2, 1, 1, count_include_pad=False).data[0, 0, 0, 0] == 1.0


def test_unbatched_input():
    x = _distinct((3, 6, 6))
    assert F.max_pool2d(x, 2).shape == (3, 3, 3)
    assert F.avg_pool2d(x, 2).shape == (3, 3, 3)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize(("shape", "args", "message"), [
    ((6, 6), (2,), r"input must be \(N, C, H, W\) or \(C, H, W\), got \(6, 6\) float32"),
    ((1, 1, 3, 3), (4,), "spans 4 along H but the padded input is only 3"),
    ((1, 1, 6, 6), (2, 0), "stride must be >= 1"),
    ((1, 1, 6, 6), (0,), "kernel_size must be >= 1"),
    ((1, 1, 6, 6), (2, 2, 2), "padding 2 must be at most half the kernel size 2"),
    ((1, 1, 6, 6), (2, 2, -1), "padding must be >= 0"),
])
def test_bad_input(op, shape, args, message):
    with pytest.raises(ValueError, match=message):
        getattr(F, op)(pyrt.zeros(*shape), *args)
