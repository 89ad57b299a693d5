"""``F.pad``, ``F.one_hot``, ``conv1d``, ``conv_transpose2d``, ``padding='same'``/``'valid'`` and the
conv modules, and pooling's ``ceil_mode``/``return_indices``/``divisor_override``: float64
gradchecks, and values and gradients equal to PyTorch's on edge geometries (odd and even
kernels, pads as large as allowed, strides that leave partial windows, groups, dilation)."""

from __future__ import annotations

import numpy as np
import pytest
from torch_parity import assert_matches_torch, copy_torch_weights

import pyrt
import pyrt.nn.functional as F
from pyrt import nn
from pyrt.errors import ShapeError

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# --- pad ---------------------------------------------------------------------------------

PADS = [
    ("constant", (1, 2), (2, 3, 5)),
    ("constant", (0, 0, 2, 1), (2, 3, 4)),
    ("constant", (-1, 2, 1, -2), (2, 3, 4, 5)),  # negative amounts crop
    ("constant", (1, 1, 1, 1, 1, 1), (2, 3, 4, 5)),
    ("reflect", (2, 3), (2, 3, 5)),
    ("reflect", (3, 1, 2, 2), (1, 2, 4, 5)),  # as large as allowed: pad < size
    ("replicate", (4, 1), (2, 3, 2)),  # wider than the dim itself
    ("replicate", (1, 3, 2, 0), (2, 3, 4, 5)),
    ("circular", (2, 5, 1, 0), (1, 2, 3, 5)),
    ("circular", (1, 1), (2, 1, 1)),
]


@pytest.mark.parametrize(("mode", "amounts", "shape"), PADS)
def test_pad_matches_torch_and_gradchecks(mode, amounts, shape) -> None:
    x = _rand(*shape)
    assert_matches_torch(lambda t: F.pad(t, amounts, mode), lambda t: TF.pad(t, amounts, mode), [x])
    assert pyrt.gradcheck(lambda t: F.pad(t, amounts, mode), [pyrt.tensor(x, requires_grad=True)])


def test_pad_constant_value_and_dtype() -> None:
    out = F.pad(pyrt.tensor([[1, 2]]), (1, 0, 0, 1), value=7)
    assert out.tolist() == [[7, 1, 2], [7, 7, 7]] and out.dtype == np.int64
    assert F.pad(pyrt.ones(2), (1, 1)).dtype == np.float32


def test_pad_errors() -> None:
    with pytest.raises(ValueError, match="even number of ints"):
        F.pad(pyrt.ones(3), (1,))
    with pytest.raises(ValueError, match="covers 2 dims"):
        F.pad(pyrt.ones(3), (1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"reflect padding .* must be smaller than the padded dim"):
        F.pad(pyrt.ones(1, 3), (3, 0), mode="reflect")
    with pytest.raises(ValueError, match="mode must be"):
        F.pad(pyrt.ones(1, 3), (1, 0), mode="mirror")
    with pytest.raises(ValueError, match="crops more than"):
        F.pad(pyrt.ones(1, 3), (-2, -2))


# --- one_hot -----------------------------------------------------------------------------

def test_one_hot_matches_torch() -> None:
    labels = np.array([[0, 3], [2, 2]])
    for classes in (-1, 6):
        ours = F.one_hot(pyrt.tensor(labels), classes)
        theirs = TF.one_hot(torch.tensor(labels), classes).numpy()
        assert ours.dtype == np.int64 and np.array_equal(ours.data, theirs)
    assert F.one_hot(pyrt.tensor(np.zeros(0, np.int64)), 3).shape == (0, 3)


def test_one_hot_errors() -> None:
    with pytest.raises(RuntimeError, match=r"class values must be in \[0, 3\)"):
        F.one_hot(pyrt.tensor([0, 3]), 3)
    with pytest.raises(RuntimeError, match="class values"):
        F.one_hot(pyrt.tensor([-1, 0]))
    with pytest.raises(TypeError, match="integer"):
        F.one_hot(pyrt.tensor([0.0]))


# --- conv1d, conv_transpose2d, 'same' ------------------------------------------------------

CONV1D = [
    {}, {"stride": 2, "padding": 1}, {"padding": "same", "dilation": 2}, {"padding": "same"},
    {"padding": "valid", "stride": 3}, {"groups": 2, "padding": 2, "dilation": 3},
]


@pytest.mark.parametrize("kwargs", CONV1D)
@pytest.mark.parametrize("kernel", [1, 4, 5])
def test_conv1d_matches_torch(kwargs, kernel) -> None:
    groups = kwargs.get("groups", 1)
    arrays = [_rand(2, 4, 11), _rand(6, 4 // groups, kernel, seed=1), _rand(6, seed=2)]
    assert_matches_torch(lambda *t: F.conv1d(*t, **kwargs), lambda *t: TF.conv1d(*t, **kwargs), arrays)


def test_conv1d_gradcheck_and_unbatched() -> None:
    x = pyrt.tensor(_rand(4, 9), requires_grad=True)
    w = pyrt.tensor(_rand(2, 4, 3, seed=1), requires_grad=True)
    assert pyrt.gradcheck(lambda x, w: F.conv1d(x, w, padding="same"), [x, w])
    assert F.conv1d(x, w).shape == (2, 7)


CONV2D_SAME = [((3, 3), (1, 1)), ((2, 4), (1, 1)), ((4, 3), (2, 1)), ((1, 2), (3, 3))]


@pytest.mark.parametrize(("kernel", "dilation"), CONV2D_SAME)
def test_conv2d_same_padding_matches_torch(kernel, dilation) -> None:
    arrays = [_rand(2, 3, 7, 8), _rand(4, 3, *kernel, seed=1), _rand(4, seed=2)]
    kwargs = {"padding": "same", "dilation": dilation}
    assert_matches_torch(lambda *t: F.conv2d(*t, **kwargs), lambda *t: TF.conv2d(*t, **kwargs), arrays)
    x, w = (pyrt.tensor(a, requires_grad=True) for a in arrays[:2])
    assert pyrt.gradcheck(lambda x, w: F.conv2d(x, w, **kwargs), [x, w])


def test_conv_string_padding_errors() -> None:
    with pytest.raises(ValueError, match="not supported for strided"):
        F.conv2d(pyrt.ones(1, 1, 5, 5), pyrt.ones(1, 1, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="'valid' or 'same'"):
        F.conv2d(pyrt.ones(1, 1, 5, 5), pyrt.ones(1, 1, 3, 3), padding="full")


TRANSPOSED = [
    {}, {"stride": 2}, {"stride": 2, "padding": 1, "output_padding": 1},
    {"stride": (2, 3), "padding": (1, 0), "dilation": 2, "output_padding": (1, 2)},
    {"groups": 2, "stride": 3, "padding": 2}, {"dilation": (1, 3), "output_padding": (0, 2)},
]


@pytest.mark.parametrize("kwargs", TRANSPOSED)
def test_conv_transpose2d_matches_torch(kwargs) -> None:
    groups = kwargs.get("groups", 1)
    arrays = [_rand(2, 4, 5, 6), _rand(4, 3, 3, 2, seed=1), _rand(3 * groups, seed=2)]
    assert_matches_torch(lambda *t: F.conv_transpose2d(*t, **kwargs),
                         lambda *t: TF.conv_transpose2d(*t, **kwargs), arrays)


def test_conv_transpose2d_gradcheck_unbatched_and_no_bias() -> None:
    x = pyrt.tensor(_rand(4, 3, 3), requires_grad=True)
    w = pyrt.tensor(_rand(4, 2, 2, 3, seed=1), requires_grad=True)
    assert pyrt.gradcheck(lambda x, w: F.conv_transpose2d(x, w, stride=2, groups=2, output_padding=1), [x, w])
    expected = TF.conv_transpose2d(torch.tensor(x.data), torch.tensor(w.data)).shape
    assert F.conv_transpose2d(x, w).shape == tuple(expected)


def test_conv_transpose2d_errors() -> None:
    with pytest.raises(ShapeError, match=r"expected input \(N, 4, H, W\)"):
        F.conv_transpose2d(pyrt.ones(1, 3, 4, 4), pyrt.ones(4, 2, 3, 3))
    with pytest.raises(ValueError, match=r"output_padding .* must be smaller than stride"):
        F.conv_transpose2d(pyrt.ones(1, 4, 4, 4), pyrt.ones(4, 2, 3, 3), output_padding=1)
    with pytest.raises(RuntimeError):  # ShapeError is a RuntimeError, as PyTorch raises
        F.conv2d(pyrt.ones(1, 3, 4, 4), pyrt.ones(2, 2, 3, 3))


@pytest.mark.parametrize(("ours", "theirs"), [
    (lambda: nn.Conv1d(4, 6, 3, padding="same"), lambda: torch.nn.Conv1d(4, 6, 3, padding="same")),
    (lambda: nn.Conv1d(4, 6, 4, stride=2, padding=2, groups=2, bias=False),
     lambda: torch.nn.Conv1d(4, 6, 4, stride=2, padding=2, groups=2, bias=False)),
    (lambda: nn.Conv2d(4, 6, (2, 3), padding="same"), lambda: torch.nn.Conv2d(4, 6, (2, 3), padding="same")),
    (lambda: nn.Conv2d(4, 6, 3, padding="valid"), lambda: torch.nn.Conv2d(4, 6, 3, padding="valid")),
    (lambda: nn.Conv2d(4, 6, 3, padding=2, padding_mode="reflect"),
     lambda: torch.nn.Conv2d(4, 6, 3, padding=2, padding_mode="reflect")),
    (lambda: nn.Conv2d(4, 6, 2, padding="same", padding_mode="replicate"),
     lambda: torch.nn.Conv2d(4, 6, 2, padding="same", padding_mode="replicate")),
    (lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular"),
     lambda: torch.nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular")),
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
     lambda: torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)),
])
def test_conv_modules_match_torch(ours, theirs) -> None:
    ours, theirs = ours().double(), theirs().double()
    assert repr(ours) == repr(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    copy_torch_weights(ours, theirs)
    shape = (2, 4, 7) if isinstance(ours, nn.Conv1d) else (2, 4, 6, 7)
    x = _rand(*shape)
    params = [p for _, p in ours.named_parameters()]
    assert_matches_torch(ours, theirs, [x])
    # parameter gradients too: compare after one more backward of the same projection
    out = ours(pyrt.tensor(x))
    t_out = theirs(torch.tensor(x))
    w = _rand(*out.shape, seed=5)
    for p in params:
        p.grad = None
    theirs.zero_grad()
    (out * pyrt.tensor(w)).sum().backward()
    (t_out * torch.tensor(w)).sum().backward()
    for (name, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        np.testing.assert_allclose(p.grad.data, tp.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


def test_conv_transpose2d_output_size() -> None:
    up = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1)
    t_up = torch.nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1)
    x = pyrt.ones(1, 2, 4, 4)
    assert up(x, output_size=(8, 8)).shape == tuple(t_up(torch.ones(1, 2, 4, 4), output_size=(8, 8)).shape)
    assert up(x).shape == (1, 2, 7, 7)
    with pytest.raises(ValueError, match="not reachable"):
        up(x, output_size=(10, 10))


def test_conv_module_init_bounds_follow_torch() -> None:
    pyrt.manual_seed(0)
    up = nn.ConvTranspose2d(16, 8, 3)  # fan_in = weight.shape[1] * 9 = 72 (out_channels, as torch)
    bound = 1 / np.sqrt(72)
    assert np.abs(up.weight.data).max() <= bound and np.abs(up.weight.data).max() > 0.9 * bound
    assert np.abs(up.bias.data).max() <= bound


# --- pooling -------------------------------------------------------------------------------

POOLS = [
    {"kernel_size": 2, "ceil_mode": True},
    {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
    {"kernel_size": (3, 2), "stride": (2, 3), "padding": (1, 1), "ceil_mode": True},
    {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True},  # last window would start in padding
    {"kernel_size": 3, "stride": 3},
]


@pytest.mark.parametrize("kwargs", POOLS)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_ceil_mode_matches_torch(kwargs, count_include_pad) -> None:
    kw = {**kwargs, "count_include_pad": count_include_pad}
    assert_matches_torch(lambda t: F.avg_pool2d(t, **kw), lambda t: TF.avg_pool2d(t, **kw),
                         [_rand(2, 3, 7, 8)])
    assert pyrt.gradcheck(lambda t: F.avg_pool2d(t, **kw),
                          [pyrt.tensor(_rand(1, 1, 7, 8), requires_grad=True)])


def test_avg_pool2d_divisor_override() -> None:
    kw = {"kernel_size": 3, "stride": 2, "ceil_mode": True, "divisor_override": 5}
    assert_matches_torch(lambda t: F.avg_pool2d(t, **kw), lambda t: TF.avg_pool2d(t, **kw),
                         [_rand(2, 3, 7, 8)])
    with pytest.raises(ValueError, match="divisor_override"):
        F.avg_pool2d(pyrt.ones(1, 1, 4, 4), 2, divisor_override=0)


@pytest.mark.parametrize("kwargs", [*POOLS, {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2,
                                              "ceil_mode": True}])
@pytest.mark.parametrize("batched", [True, False])
def test_max_pool2d_ceil_mode_and_indices_match_torch(kwargs, batched) -> None:
    x = _rand(2, 3, 7, 8) if batched else _rand(3, 7, 8)
    kw = {**kwargs, "return_indices": True}
    ours, theirs = F.max_pool2d(pyrt.tensor(x), **kw), TF.max_pool2d(torch.tensor(x), **kw)
    assert ours[1].dtype == np.int64 and np.array_equal(ours[1].data, theirs[1].numpy())
    assert_matches_torch(lambda t: F.max_pool2d(t, **kw), lambda t: TF.max_pool2d(t, **kw), [x])
    if batched:  # finite differences cost two forwards per element: one small plane is enough
        small = pyrt.tensor(x[:1, :1], requires_grad=True)
        assert pyrt.gradcheck(lambda t: F.max_pool2d(t, **kwargs), [small])


def test_pool_modules() -> None:
    pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True, return_indices=True)
    t_pool = torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True, return_indices=True)
    assert repr(pool) == repr(t_pool)
    x = _rand(2, 3, 8, 8)
    out, indices = pool(pyrt.tensor(x))
    t_out, t_indices = t_pool(torch.tensor(x))
    np.testing.assert_array_equal(out.data, t_out.numpy())
    np.testing.assert_array_equal(indices.data, t_indices.numpy())
    avg = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False, divisor_override=None)
    t_avg = torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
    np.testing.assert_allclose(avg(pyrt.tensor(x)).data, t_avg(torch.tensor(x)).numpy(), rtol=1e-12)
