"""conv2d: finite differences in float64, PyTorch as the oracle, layouts, and bad input.

The naive reference (a loop over output pixels) lives here, not in pyrt: it
checks the im2col path without needing torch.
"""

from __future__ import annotations

import numpy as np
import pytest

import pyrt
import pyrt.nn.functional as F
from pyrt import kernels

# (N, C, H, W), (O, C/groups, KH, KW), stride, padding, dilation, groups
GEOMETRIES = [
    pytest.param((2, 3, 5, 5), (4, 3, 3, 3), 1, 0, 1, 1, id="3x3"),
    pytest.param((2, 3, 5, 5), (4, 3, 3, 3), 2, 1, 1, 1, id="stride2_pad1"),
    pytest.param((2, 3, 6, 7), (2, 3, 2, 3), (2, 1), (1, 0), 1, 1, id="nonsquare_uneven"),
    pytest.param((2, 3, 7, 6), (3, 3, 3, 2), 1, 2, 2, 1, id="dilation2_pad2"),
    pytest.param((1, 2, 5, 5), (3, 2, 1, 1), 1, 0, 1, 1, id="1x1"),
    pytest.param((2, 4, 5, 5), (6, 2, 3, 3), 1, 1, 1, 2, id="groups2"),
    pytest.param((2, 3, 4, 4), (3, 1, 3, 3), 1, 1, 1, 3, id="depthwise"),
    pytest.param((1, 8, 4, 4), (2, 8, 2, 2), 1, 0, 1, 1, id="channels_ge_width"),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else v


def _reference_conv(x, w, b, stride, padding, dilation, groups):
    """One output pixel at a time: slow and obviously right."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                           j * sw:j * sw + dw * (kw - 1) + 1:dw]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3)) + (0 if b is None else b[oc])
    return out


def _inputs(x_shape, w_shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = pyrt.tensor(rng.standard_normal(x_shape).astype(dtype), requires_grad=True)
    w = pyrt.tensor(rng.standard_normal(w_shape).astype(dtype), requires_grad=True)
    b = pyrt.tensor(rng.standard_normal(w_shape[0]).astype(dtype), requires_grad=True)
    return x, w, b


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "dilation", "groups"),
                         GEOMETRIES)
def test_conv2d_gradcheck(x_shape, w_shape, stride, padding, dilation, groups):
    x, w, b = _inputs(x_shape, w_shape)
    assert pyrt.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups),
                          [x, w, b])


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "dilation", "groups"),
                         GEOMETRIES)
def test_conv2d_matches_pixel_loop(x_shape, w_shape, stride, padding, dilation, groups):
    x, w, b = _inputs(x_shape, w_shape)
    out = F.conv2d(x, w, b, stride, padding, dilation, groups)
    expected = _reference_conv(x.data, w.data, b.data, stride, padding, dilation, groups)
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "dilation", "groups"),
                         [*GEOMETRIES,
                          pytest.param((3, 16, 9, 9), (8, 16, 3, 3), 2, 1, 1, 1, id="wide"),
                          pytest.param((2, 3, 12, 12), (5, 3, 5, 5), 1, 2, 1, 1, id="5x5")])
def test_conv2d_matches_torch(x_shape, w_shape, stride, padding, dilation, groups):
    torch = pytest.importorskip("torch")
    x, w, b = _inputs(x_shape, w_shape, np.float32)
    out = F.conv2d(x, w, b, stride, padding, dilation, groups)
    grad = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    out.backward(grad)
    tx, tw, tb = (torch.tensor(t.data, requires_grad=True) for t in (x, w, b))
    t_out = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    t_out.backward(torch.tensor(grad))
    np.testing.assert_allclose(out.data, t_out.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(w.grad.data, tw.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b.grad.data, tb.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_float32_runs_on_our_sgemm(monkeypatch):
    calls = []
    real = kernels.matmul

    def counting(a, b, out=None):
        calls.append((a.shape, b.shape))
        return real(a, b, out=out)

    monkeypatch.setattr(kernels, "matmul", counting)
    x, w, b = _inputs((2, 3, 6, 6), (4, 3, 3, 3), np.float32)
    F.conv2d(x, w, b, padding=1).sum().backward()
    # forward cols @ W^T, grad_weight grad^T @ cols, and grad_cols made transposed
    # (W^T @ grad^T) since 3 channels < 6 output columns
    assert [(a, b) for a, b in calls] == [((72, 27), (27, 4)), ((4, 72), (72, 27)),
                                          ((27, 4), (4, 72))]


def test_first_layer_skips_the_input_gradient():
    x, w, b = _inputs((2, 3, 6, 6), (4, 3, 3, 3), np.float32)
    x.requires_grad = False
    F.conv2d(x, w, b).sum().backward()
    assert x.grad is None and w.grad is not None and b.grad is not None


def test_output_is_a_channels_last_view_and_feeds_the_next_conv():
    x, w, _ = _inputs((2, 3, 6, 6), (4, 3, 3, 3))
    _, w2, _ = _inputs((1,), (5, 4, 3, 3), seed=1)
    hidden = F.conv2d(x, w, padding=1)
    assert hidden.data.strides[1] == hidden.data.itemsize  # channels innermost in memory
    assert pyrt.gradcheck(lambda x, w, w2: F.conv2d(F.conv2d(x, w, padding=1).relu(), w2),
                          [x, w, w2])


def test_noncontiguous_input():
    x, w, b = _inputs((2, 3, 7, 9), (4, 3, 3, 3))
    sliced = x[:, :, 1:, ::2]  # a strided view
    expected = _reference_conv(np.ascontiguousarray(sliced.data), w.data, b.data, 1, 1, 1, 1)
    np.testing.assert_allclose(F.conv2d(sliced, w, b, padding=1).data, expected, atol=1e-12)


def test_unbatched_input_and_no_bias():
    x, w, _ = _inputs((3, 5, 5), (4, 3, 3, 3))
    out = F.conv2d(x, w)
    assert out.shape == (4, 3, 3)
    np.testing.assert_allclose(out.data, _reference_conv(x.data[None], w.data, None, 1, 0, 1, 1)[0])


def test_kernel_equal_to_padded_input_gives_one_pixel():
    x, w, b = _inputs((2, 3, 3, 3), (4, 3, 5, 5))
    assert F.conv2d(x, w, b, padding=1).shape == (2, 4, 1, 1)


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs", "error", "message"), [
    ((3, 5, 5, 5, 1), (4, 3, 3, 3), {}, ValueError, r"input is \(3, 5, 5, 5, 1\) float64"),
    ((2, 5, 5), (4, 3, 3, 3), {}, ValueError, r"expected input \(N, 3, H, W\)"),
    ((2, 4, 5, 5), (4, 3, 3, 3), {}, ValueError, r"input is \(2, 4, 5, 5\)"),
    ((2, 3, 5, 5), (4, 3, 3), {}, ValueError, r"weight must be .* got \(4, 3, 3\)"),
    ((2, 3, 2, 5), (4, 3, 3, 3), {}, ValueError, "spans 3 along H but the padded input is only 2"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"dilation": 3}, ValueError, "spans 7 along H"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"stride": 0}, ValueError, "stride must be >= 1"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"stride": -1}, ValueError, "stride must be >= 1"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"padding": -1}, ValueError, "padding must be >= 0"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"stride": (1, 2, 3)}, TypeError, "pair of ints"),
    ((2, 4, 5, 5), (3, 2, 3, 3), {"groups": 2}, ValueError, "not divisible by groups=2"),
    ((2, 3, 5, 5), (4, 3, 3, 3), {"groups": 0}, ValueError, "groups must be a positive int"),
])
def test_bad_input_names_the_shapes(x_shape, w_shape, kwargs, error, message):
    x = pyrt.zeros(*x_shape).double()
    w = pyrt.zeros(*w_shape).double()
    with pytest.raises(error, match=message):
        F.conv2d(x, w, **kwargs)


def test_bias_and_dtype_mismatch():
    x, w, _ = _inputs((1, 3, 5, 5), (4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"bias is \(3,\) float64, expected \(4,\)"):
        F.conv2d(x, w, pyrt.zeros(3).double())
    with pytest.raises(TypeError, match="input is float32 but weight is float64"):
        F.conv2d(x.float(), w)
