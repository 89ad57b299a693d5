"""``pyrt.kernels``' optimizer updates and LSTM cell on GPU (cupy) arrays: the plain reference
(``pyrt.kernel_reference``) in place on the device, against the native float32 kernel on the
CPU. Runs on the CPU fake of cupy everywhere (tests/fake_cupy.py, strict about numpy leaks and
the current device) and on real cupy where a GPU is visible."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pyrt import kernels


@pytest.fixture(params=[0, 1])
def on_device(gpu: Any, request: pytest.FixtureRequest) -> Callable[[np.ndarray], Any]:
    """Copies host arrays to GPU ``request.param`` while device 0 stays current."""
    if gpu.cuda.runtime.getDeviceCount() <= request.param:
        pytest.skip(f"needs GPU {request.param}")

    def copy(host: np.ndarray) -> Any:
        with gpu.cuda.Device(request.param):
            return gpu.asarray(host)

    copy.device_id = request.param  # type: ignore[attr-defined]
    return copy


def _assert_same(gpu: Any, on_device: Any, got: list[Any], want: list[np.ndarray]) -> None:
    assert gpu.cuda.runtime.getDevice() == 0  # the kernel put the current device back
    for g, w in zip(got, want, strict=True):
        assert g.device.id == on_device.device_id  # updated in place, on its own GPU
        np.testing.assert_allclose(g.get(), w, rtol=1e-5, atol=1e-6)


def test_sgd_step(gpu: Any, on_device: Any, rng: np.random.Generator) -> None:
    start = rng.standard_normal((6, 5)).astype(np.float32)
    grads = [rng.standard_normal((6, 5)).astype(np.float32) for _ in range(3)]
    options = dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True, maximize=True)
    want = [start.copy(), np.empty_like(start)]
    got = [on_device(start), on_device(np.zeros_like(start))]
    for step, g in enumerate(grads):
        kernels.sgd_step(want[0], g, want[1], first_step=step == 0, **options)
        kernels.sgd_step(got[0], on_device(g), got[1], first_step=step == 0, **options)
    _assert_same(gpu, on_device, got, want)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_step_with_amsgrad(gpu: Any, on_device: Any, decoupled: bool,
                                rng: np.random.Generator) -> None:
    start = rng.standard_normal(11).astype(np.float32)
    grads = [(rng.standard_normal(11) * scale).astype(np.float32) for scale in (0.3, 3.0, 0.3)]
    want = [start.copy(), *(np.zeros_like(start) for _ in range(3))]
    got = [on_device(x) for x in want]
    for step, g in enumerate(grads, start=1):
        for arrays, grad in ((want, g), (got, on_device(g))):
            kernels.adam_step(arrays[0], grad, arrays[1], arrays[2], arrays[3], lr=0.01, beta1=0.9,
                              beta2=0.999, eps=1e-8, weight_decay=0.1, step=step,
                              decoupled_weight_decay=decoupled)
    _assert_same(gpu, on_device, got, want)


def test_lstm_cell_forward_and_backward(gpu: Any, on_device: Any, rng: np.random.Generator) -> None:
    batch, hidden = 3, 5
    pre = (rng.standard_normal((batch, 4 * hidden)) * 4).astype(np.float32)
    pre[0, :2] = [60.0, -60.0]  # saturated gates
    c_prev, grad_h, grad_c = (rng.standard_normal((batch, hidden)).astype(np.float32) for _ in range(3))
    results = []
    for move in (np.copy, on_device):
        gates, c, tanh_c, h = move(pre), move(c_prev), move(c_prev), move(c_prev)
        kernels.lstm_cell_forward(gates, move(c_prev), c, tanh_c, h)
        d_c, d_gates = move(grad_c), move(pre)
        kernels.lstm_cell_backward(gates, move(c_prev), tanh_c, move(grad_h), None, d_c, d_gates)
        results.append([gates, c, tanh_c, h, d_c, d_gates])
    _assert_same(gpu, on_device, results[1], results[0])


def test_numpy_and_cupy_arrays_do_not_mix(gpu: Any) -> None:
    p = np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="mixes numpy and cupy arrays"):
        kernels.sgd_step(p, gpu.asarray(p), None, lr=0.1)
