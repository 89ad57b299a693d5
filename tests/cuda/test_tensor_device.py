"""Tensors and modules on ``device="cuda"``: moves, factories, device errors, state dicts,
checkpoints, optimizers and a short training run, on the CPU fake of cupy (tests/fake_cupy.py)
and, where a GPU is there, on real cupy (the ``gpu`` fixture)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from classifier_steps import train_steps

import pyrt
from pyrt import nn


def _is_gpu(gpu, t: pyrt.Tensor, device: str = "cuda:0") -> bool:
    return isinstance(t.data, gpu.ndarray) and t.device == device


# --- Tensor -------------------------------------------------------------------------------

def test_to_cuda_and_back(gpu) -> None:
    x = pyrt.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = x.to("cuda")
    assert _is_gpu(gpu, y) and y.is_cuda and not x.is_cuda
    assert y.tolist() == x.tolist()
    assert y.to("cuda") is y and y.to("cuda:0") is y and y.cuda() is y  # same device: itself
    assert x.to("cpu") is x and x.cpu() is x
    for form in (0, "cuda:0", y):  # an int, a string, another tensor's device
        assert _is_gpu(gpu, x.to(form))
    z = y.cpu()
    assert isinstance(z.data, np.ndarray) and z.device == "cpu"
    np.testing.assert_array_equal(z.numpy(), x.numpy())
    assert x.cuda().device == "cuda:0"
    w = x.to("cuda", pyrt.float64)
    assert _is_gpu(gpu, w) and w.dtype == np.float64
    assert y.to("cuda", copy=True) is not y


def test_to_is_a_copy(gpu) -> None:
    x = pyrt.tensor([1.0, 2.0])
    y = x.cuda()
    y.add_(pyrt.ones(2, device="cuda"))
    assert x.tolist() == [1.0, 2.0] and y.tolist() == [2.0, 3.0]


def test_gradient_flows_back_to_the_source_device(gpu) -> None:
    x = pyrt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x.cuda()
    assert y.grad_fn is not None
    (y * y).sum().backward()
    assert isinstance(x.grad.data, np.ndarray) and x.grad.tolist() == [2.0, 4.0, 6.0]
    g = pyrt.tensor([1.0, 2.0], device="cuda", requires_grad=True)
    (g.cpu() * 3).sum().backward()
    assert _is_gpu(gpu, g.grad) and g.grad.tolist() == [3.0, 3.0]


def test_torch_devices(gpu) -> None:
    torch = pytest.importorskip("torch")
    x = pyrt.tensor([1.0])
    assert _is_gpu(gpu, x.to(torch.device("cuda", 0)))
    assert _is_gpu(gpu, pyrt.zeros(2, device=torch.device("cuda")))
    assert x.to(torch.device("cpu")) is x


def test_factories_take_device(gpu) -> None:
    made = [pyrt.zeros(2, 3, device="cuda"), pyrt.ones(3, device="cuda"), pyrt.empty(2, device="cuda"),
            pyrt.full((2,), 1.5, device="cuda"), pyrt.arange(5, device="cuda"),
            pyrt.rand(2, device="cuda"), pyrt.randn(2, 2, device="cuda"),
            pyrt.randint(0, 4, (3,), device="cuda"), pyrt.tensor([1, 2], device="cuda"),
            pyrt.tensor(np.ones(3), device=0)]
    for t in made:
        assert _is_gpu(gpu, t), t
    assert made[4].dtype == np.int64 and made[4].tolist() == [0, 1, 2, 3, 4]
    assert made[3].tolist() == [1.5, 1.5]
    base = pyrt.ones(2, 2, device="cuda", dtype=pyrt.float64)
    for like in (pyrt.zeros_like(base), pyrt.ones_like(base), pyrt.empty_like(base), pyrt.full_like(base, 2),
                 pyrt.rand_like(base), pyrt.randn_like(base)):
        assert _is_gpu(gpu, like) and like.dtype == np.float64 and like.shape == (2, 2)
    assert pyrt.zeros_like(base, device="cpu").device == "cpu"
    leaf = pyrt.zeros(2, device="cuda", requires_grad=True)
    assert leaf.requires_grad and leaf.is_leaf


def test_random_factories_draw_the_same_values_on_every_device(gpu) -> None:
    pyrt.manual_seed(3)
    on_cpu = pyrt.randn(4).tolist()
    pyrt.manual_seed(3)
    assert pyrt.randn(4, device="cuda").tolist() == on_cpu


def test_mixing_devices_is_pytorchs_error(gpu) -> None:
    a, b = pyrt.ones(3), pyrt.ones(3, device="cuda")
    message = "Expected all tensors to be on the same device, but found at least two devices, "
    for op in (lambda: a + b, lambda: b * a, lambda: pyrt.cat([b, a]), lambda: a @ b,
               lambda: nn.Linear(3, 2)(b), lambda: b < a):
        with pytest.raises(RuntimeError, match=message):
            op()
    assert (b + 1).device == "cuda:0" and (b * np.float32(2)).device == "cuda:0"  # numbers mix


def test_numpy_of_a_gpu_tensor_is_refused_as_in_pytorch(gpu) -> None:
    x = pyrt.ones(2, device="cuda")
    with pytest.raises(TypeError, match=r"can't convert cuda:0 device type tensor to numpy.*\.cpu\(\)"):
        x.numpy()
    assert x.cpu().numpy().tolist() == [1.0, 1.0]
    assert x.sum().item() == 2.0 and float(x[0]) == 1.0 and "device='cuda:0'" in repr(x)


def test_copy_between_devices(gpu) -> None:
    g = pyrt.zeros(2, device="cuda")
    g.copy_(pyrt.tensor([1.0, 2.0]))
    assert _is_gpu(gpu, g) and g.tolist() == [1.0, 2.0]
    c = pyrt.zeros(2)
    c.copy_(g)
    assert isinstance(c.data, np.ndarray) and c.tolist() == [1.0, 2.0]


def test_absent_devices_are_clear(fake_gpu) -> None:
    assert pyrt.cuda.device_count() == 2 and pyrt.cuda.is_available()
    with pytest.raises(RuntimeError, match=r"CUDA device 2 was requested .* valid indices are 0\.\.1"):
        pyrt.ones(1).to("cuda:2")
    with pytest.raises(RuntimeError, match="CUDA device 5"):
        pyrt.zeros(1, device=5)


# --- a second GPU ---------------------------------------------------------------------------

def test_second_device(fake_gpu) -> None:
    x = pyrt.tensor([1.0, 2.0], requires_grad=True)
    y = x.to("cuda:1")
    assert y.device == "cuda:1" and y.data.device.id == 1
    z = y.to("cuda:0")
    assert z.device == "cuda:0"
    ((z * 2).sum() + (y * 3).sum().to("cuda:0")).backward()
    assert x.grad.device == "cpu" and x.grad.tolist() == [5.0, 5.0]
    assert fake_gpu.cuda.runtime.getDevice() == 0  # the guards restored the current device
    with pytest.raises(RuntimeError, match="cuda:1 and cuda:0"):
        y + z


# --- modules --------------------------------------------------------------------------------

def _net() -> nn.Module:
    pyrt.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_module_to_moves_parameters_buffers_and_grads_in_place(gpu) -> None:
    model = _net()
    params = list(model.parameters())
    model(pyrt.randn(5, 4)).sum().backward()
    assert model.to("cuda") is model
    assert [p for p in model.parameters()] == params  # the same Parameter objects
    for t in [*model.parameters(), *model.buffers()]:
        assert _is_gpu(gpu, t), t.shape
    for p in params:
        assert _is_gpu(gpu, p.grad)
    out = model(pyrt.randn(5, 4, device="cuda"))
    assert _is_gpu(gpu, out)
    assert model.cpu() is model and all(isinstance(p.data, np.ndarray) for p in model.parameters())
    assert all(isinstance(p.grad.data, np.ndarray) for p in params)
    model.cuda()
    assert _is_gpu(gpu, model[1].running_mean) and model[1].num_batches_tracked.dtype == np.int64
    model.to(pyrt.float64)
    assert _is_gpu(gpu, model[0].weight) and model[0].weight.dtype == np.float64


def test_module_on_the_gpu_computes_what_it_computes_on_the_cpu(gpu) -> None:
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    cpu, cuda = _net(), _net().cuda()
    want = cpu(pyrt.tensor(x))
    got = cuda(pyrt.tensor(x, device="cuda"))
    np.testing.assert_allclose(got.detach().cpu().numpy(), want.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_state_dict_save_load_of_a_gpu_model(gpu, tmp_path) -> None:
    model = _net().cuda()
    model(pyrt.randn(3, 4, device="cuda"))  # moves BatchNorm's running statistics
    state = model.state_dict()
    assert all(_is_gpu(gpu, t) for t in state.values())
    path = tmp_path / "gpu.pt"
    pyrt.save(state, path)  # copied to the host
    on_host = pyrt.load(path)
    assert all(isinstance(t.data, np.ndarray) for t in on_host.values())
    for name, t in state.items():
        np.testing.assert_array_equal(on_host[name].numpy(), t.cpu().numpy())
    on_gpu = pyrt.load(path, map_location="cuda")
    assert all(_is_gpu(gpu, t) for t in on_gpu.values())
    fresh = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).cuda()
    fresh.load_state_dict(on_host)  # a CPU checkpoint into a GPU model
    assert all(_is_gpu(gpu, t) for t in fresh.state_dict().values())
    cpu_model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    cpu_model.load_state_dict(state)  # a GPU state dict into a CPU model
    np.testing.assert_array_equal(cpu_model[0].weight.detach().numpy(),
                                  model[0].weight.detach().cpu().numpy())
    buffer = io.BytesIO()
    pyrt.save({"w": model[0].weight, "raw": model[0].bias.data}, buffer)  # a raw cupy array too
    buffer.seek(0)
    loaded = pyrt.load(buffer, map_location=0)
    assert _is_gpu(gpu, loaded["w"]) and isinstance(loaded["raw"], np.ndarray)


def test_module_on_the_second_device(fake_gpu) -> None:
    model = _net().to("cuda:1")
    out = model(pyrt.randn(5, 4, device="cuda:1"))
    out.sum().backward()
    assert out.device == "cuda:1" and all(p.grad.device == "cuda:1" for p in model.parameters())
    model.zero_grad(set_to_none=False)
    model.load_state_dict(_net().state_dict())
    model.to(pyrt.float64)
    assert model[0].weight.device == "cuda:1" and model[0].weight.dtype == np.float64
    assert fake_gpu.cuda.runtime.getDevice() == 0


# --- optimizers and a training run ---------------------------------------------------------------

OPTIMIZERS = {
    "SGD": lambda p: pyrt.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
    "Adam": lambda p: pyrt.optim.Adam(p, lr=0.01),
    "AdamW": lambda p: pyrt.optim.AdamW(p, lr=0.01, amsgrad=True),
}


def _train(device: str, make_optimizer, steps: int = 3) -> tuple[list[float], list[np.ndarray]]:
    # No BatchNorm here: the bias before one has a zero gradient, whose rounding noise (1e-7,
    # different on each device) Adam's normalisation would turn into full-size steps.
    pyrt.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(device)
    return train_steps(model, make_optimizer(model.parameters()), device, steps, batch=8, features=4,
                       classes=3, seed=1)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizers_on_the_gpu_match_the_cpu(gpu, name: str) -> None:
    want_losses, want_params = _train("cpu", OPTIMIZERS[name])
    got_losses, got_params = _train("cuda", OPTIMIZERS[name])
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-5)
    for got, want in zip(got_params, want_params, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizers_on_the_second_device(fake_gpu, name: str) -> None:
    # pyrt.kernels makes the parameter's GPU current around the update (cupy refuses a kernel
    # on cuda:1 while cuda:0 is current), so the result is the CPU's.
    want_losses, want_params = _train("cpu", OPTIMIZERS[name], steps=2)
    got_losses, got_params = _train("cuda:1", OPTIMIZERS[name], steps=2)
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-5)
    for got, want in zip(got_params, want_params, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert fake_gpu.cuda.runtime.getDevice() == 0  # and puts the current device back


def test_digits_mlp_trains_the_same_on_the_gpu(gpu) -> None:
    """The README's MLP on real digits: a few SGD steps give the CPU's losses on the GPU."""
    from pyrt.datasets.digits import load_digits

    images, labels = load_digits()
    x, y = images[:256], labels[:256]

    def run(device: str) -> list[float]:
        pyrt.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).to(device)
        optimizer = pyrt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses = []
        for step in range(8):
            batch = slice(32 * step, 32 * (step + 1))
            optimizer.zero_grad()
            loss = nn.CrossEntropyLoss()(model(pyrt.tensor(x[batch], device=device)),
                                         pyrt.tensor(y[batch], device=device))
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    want = run("cpu")
    got = run("cuda")
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[-1] < got[0]


# --- initialisers, pruning, quantization ----------------------------------------------------

@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_initialisers_fill_gpu_tensors_with_the_cpu_values(fake_gpu, device: str) -> None:
    for name in ("uniform_", "normal_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
                 "kaiming_normal_", "zeros_", "ones_"):
        fill = getattr(nn.init, name)
        pyrt.manual_seed(5)
        want = fill(pyrt.empty(4, 3)).tolist()
        pyrt.manual_seed(5)
        got = fill(pyrt.empty(4, 3, device=device))
        assert got.device == ("cuda:0" if device == "cuda" else device) and got.tolist() == want, name
    assert nn.init.constant_(pyrt.empty(2, device=device), 0.5).tolist() == [0.5, 0.5]


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_pruning_a_gpu_model(fake_gpu, device: str) -> None:
    prune = nn.utils.prune
    a, b = _net().to(device), _net()
    for model in (a, b):
        prune.l1_unstructured(model[0], "weight", amount=0.5)
        prune.global_unstructured([(model[0], "bias"), (model[3], "weight")],
                                  pruning_method=prune.L1Unstructured, amount=0.3)
        prune.ln_structured(model[3], "weight", amount=1, n=2, dim=0)
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    got = a(pyrt.tensor(x, device=device))
    want = b(pyrt.tensor(x)).detach().numpy()
    np.testing.assert_allclose(got.detach().cpu().numpy(), want, rtol=1e-6, atol=1e-6)
    got.sum().backward()
    assert a[0].weight_orig.grad.device == got.device
    prune.remove(a[0], "weight")
    assert a[0].weight.device == got.device and int((a[0].weight.cpu() == 0).sum().item()) == 16


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_quantize_dynamic_of_a_gpu_model_stays_on_its_gpu(fake_gpu, device: str) -> None:
    # The int8 kernels run on the GPU (tests/cuda/test_cuda_int8.py has the numerics).
    qmodel = pyrt.quantization.quantize_dynamic(_net().to(device), {nn.Linear}, dtype=pyrt.qint8)
    want = "cuda:0" if device == "cuda" else device
    assert {t.device for t in [*qmodel.parameters(), *qmodel.buffers()]} == {want}
    x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    with pyrt.no_grad():
        got = qmodel(pyrt.tensor(x, device=device))
        cpu = pyrt.quantization.quantize_dynamic(_net(), {nn.Linear}, dtype=pyrt.qint8)(pyrt.tensor(x))
    assert got.device == want
    np.testing.assert_array_equal(got.cpu().numpy(), cpu.numpy())
