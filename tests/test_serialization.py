"""pyrt.save / pyrt.load: round trips, order, nesting, atomic writes, and refusing bad files."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import pyrt
from pyrt import nn, optim


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_module_state_dict_round_trip(tmp_path: Path) -> None:
    src = _model()
    path = tmp_path / "model.pt"
    pyrt.save(src.state_dict(), path)
    loaded = pyrt.load(path)
    assert isinstance(loaded, OrderedDict)
    assert list(loaded) == list(src.state_dict())  # saved order
    assert all(isinstance(v, pyrt.Tensor) for v in loaded.values())
    dst = _model()
    dst.load_state_dict(loaded)
    x = pyrt.randn(2, 4)
    np.testing.assert_array_equal(src(x).data, dst(x).data)


def test_exact_path_no_suffix_added(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.bin"
    pyrt.save({"w": pyrt.ones(1)}, str(path))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.bin"]  # and no temp file left


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64", "int8", "uint8",
                                   "bool"])
def test_dtypes_and_values_preserved(tmp_path: Path, dtype: str) -> None:
    array = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    pyrt.save({"a": pyrt.Tensor(array)}, tmp_path / "f.npz")
    out = pyrt.load(tmp_path / "f.npz")["a"]
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out.data, array)


def test_zero_size_and_scalar_tensors(tmp_path: Path) -> None:
    pyrt.save({"empty": pyrt.zeros(0, 3), "scalar": pyrt.tensor(2.5)}, tmp_path / "f")
    out = pyrt.load(tmp_path / "f")
    assert out["empty"].shape == (0, 3) and out["scalar"].item() == 2.5


def test_ndarray_values_come_back_as_arrays(tmp_path: Path) -> None:
    pyrt.save({"t": pyrt.ones(2), "a": np.ones(2)}, tmp_path / "f")
    out = pyrt.load(tmp_path / "f")
    assert isinstance(out["t"], pyrt.Tensor) and isinstance(out["a"], np.ndarray)


def test_file_objects(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    pyrt.save(_model().state_dict(), buffer)
    buffer.seek(0)
    assert list(pyrt.load(buffer)) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with open(tmp_path / "f", "wb") as f:
        pyrt.save({"x": pyrt.ones(1)}, f)
    with open(tmp_path / "f", "rb") as f:
        assert pyrt.load(f)["x"].item() == 1.0


def test_full_checkpoint_with_optimizer_state(tmp_path: Path) -> None:
    model = _model()
    opt = optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        model(pyrt.ones(3, 4)).sum().backward()
        opt.step()
    pyrt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 7,
               "note": "digits", "best": None, "history": [0.5, 0.25]}, tmp_path / "ck")
    ck = pyrt.load(tmp_path / "ck")
    assert ck["epoch"] == 7 and ck["note"] == "digits" and ck["best"] is None
    assert ck["history"] == [0.5, 0.25]
    groups = ck["optimizer"]["param_groups"]
    assert groups[0]["betas"] == (0.9, 0.999) and groups[0]["params"] == [0, 1, 2, 3]
    assert set(ck["optimizer"]["state"]) == {0, 1, 2, 3}  # int keys survive
    resumed = optim.Adam(_model().parameters())
    resumed.load_state_dict(ck["optimizer"])
    assert resumed.param_groups[0]["lr"] == 0.01
    step_key = resumed.state_dict()["state"][0]["step"]
    assert step_key == 2


def test_bare_tensor_round_trip(tmp_path: Path) -> None:
    pyrt.save(pyrt.arange(4), tmp_path / "t")
    assert pyrt.load(tmp_path / "t").tolist() == [0, 1, 2, 3]


def test_plain_np_savez_archive_loads_flat(tmp_path: Path) -> None:
    np.savez(tmp_path / "plain.npz", weight=np.ones((3, 4), np.float32),
             bias=np.zeros(3, np.float32))
    loaded = pyrt.load(tmp_path / "plain.npz")
    assert list(loaded) == ["weight", "bias"]
    nn.Linear(4, 3).load_state_dict(loaded)


# --- mismatch errors surface through load_state_dict -------------------------------

def test_checkpoint_for_other_model_gives_clear_errors(tmp_path: Path) -> None:
    pyrt.save(nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3)).state_dict(), tmp_path / "f")
    with pytest.raises(RuntimeError) as info:
        _model().load_state_dict(pyrt.load(tmp_path / "f"))
    message = str(info.value)
    assert 'Missing key(s) in state_dict: "2.weight", "2.bias"' in message
    assert 'Unexpected key(s) in state_dict: "1.weight", "1.bias"' in message
    assert "size mismatch for 0.weight: copying a param with shape (5, 4)" in message


# --- refusing bad input ----------------------------------------------------------------

def test_object_arrays_refused_on_save(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="dtype object"):
        pyrt.save({"bad": np.array([{"a": 1}], dtype=object)}, tmp_path / "f")
    assert not os.listdir(tmp_path)


def test_unsupported_values_refused_on_save(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot save"):
        pyrt.save({"fn": print}, tmp_path / "f")
    with pytest.raises(TypeError, match="keys must be str or int"):
        pyrt.save({(1, 2): pyrt.ones(1)}, tmp_path / "f")
    assert not os.listdir(tmp_path)


def test_object_array_in_archive_refused_on_load(tmp_path: Path) -> None:
    # A pickled object array planted in an otherwise valid archive must not be unpickled.
    np.savez(tmp_path / "evil.npz", weight=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match=r"refusing to load member 'weight'.*pickle"):
        pyrt.load(tmp_path / "evil.npz")


def test_pickle_file_refused(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "f.pt").write_bytes(pickle.dumps({"weight": [1.0]}))
    with pytest.raises(ValueError, match="not a pyrt checkpoint"):
        pyrt.load(tmp_path / "f.pt")


@pytest.mark.parametrize("content", [b"", b"garbage bytes", b"PK\x03\x04truncated zip"])
def test_garbage_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(ValueError, match=r"not a pyrt checkpoint|corrupt"):
        pyrt.load(tmp_path / "f")


def test_single_npy_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones(2))
    with pytest.raises(ValueError, match=r"single \.npy array"):
        pyrt.load(tmp_path / "a.npy")


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        pyrt.load("/nonexistent/dir/model.pt")


def _rewrite_manifest(path: Path, edit: object) -> None:
    with np.load(path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    manifest = json.loads(members["__pyrt__"].tobytes())
    manifest = edit(manifest)  # type: ignore[operator]
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    members["__pyrt__"] = np.frombuffer(raw, dtype=np.uint8)
    np.savez(path, **members)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: {**m, "version": 99}, "format version 99"),
    (lambda m: {**m, "format": "other"}, "not a pyrt checkpoint's"),
    (lambda m: b"{not json", "unreadable manifest"),
    (lambda m: {**m, "tree": {"dict": [["w", {"array": "a7", "tensor": True}]]}},
     "array 'a7' is missing"),
    (lambda m: {**m, "tree": {"dict": [["w", {"code": "import os"}]]}}, "unknown manifest entry"),
    (lambda m: {**m, "tree": {"dict": [["w"]]}}, "corrupt"),
])
def test_tampered_manifest_refused(tmp_path: Path, edit: object, message: str) -> None:
    path = tmp_path / "f.npz"
    pyrt.save({"w": pyrt.ones(2)}, path)
    _rewrite_manifest(path, edit)
    with pytest.raises(ValueError, match=message):
        pyrt.load(path)


def test_tampered_array_shape_caught_by_load_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    pyrt.save(nn.Linear(2, 2).state_dict(), path)
    with np.load(path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    members["a0"] = np.ones((3, 3), np.float32)
    np.savez(path, **members)
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        nn.Linear(2, 2).load_state_dict(pyrt.load(path))


def test_load_options() -> None:
    buffer = io.BytesIO()
    pyrt.save({"w": pyrt.ones(1)}, buffer)
    buffer.seek(0)
    assert pyrt.load(buffer, map_location="cpu")["w"].item() == 1.0
    if not pyrt.cuda.is_available():  # a GPU is a device like any other (tests/cuda on the fake GPU)
        with pytest.raises(RuntimeError, match="CUDA device 0 was requested"):
            pyrt.load(buffer, map_location="cuda:0")
    with pytest.raises(ValueError, match="map_location"):
        pyrt.load(buffer, map_location={"cuda:0": "cpu"})
    with pytest.raises(ValueError, match="never unpickles"):
        pyrt.load(buffer, weights_only=False)


# --- atomicity ---------------------------------------------------------------------

def test_failed_save_leaves_previous_checkpoint_intact(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pt"
    pyrt.save({"w": pyrt.ones(2)}, path)
    before = path.read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        pyrt.save({"w": pyrt.zeros(2)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pt"]  # the temporary file was removed


def test_archive_is_a_real_zip_with_npy_members(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    pyrt.save({"w": pyrt.ones(2), "b": pyrt.zeros(1)}, path)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["__pyrt__.npy", "a0.npy", "a1.npy"]


# --- hostile and damaged files: one clear ValueError, nothing large allocated -------

def test_compressed_and_fortran_order_members_load(tmp_path: Path) -> None:
    fortran = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    np.savez_compressed(tmp_path / "f.npz", w=fortran, z=np.zeros(1 << 20, np.float32))
    out = pyrt.load(tmp_path / "f.npz")
    np.testing.assert_array_equal(out["w"].data, fortran)
    assert out["z"].shape == (1 << 20,) and not out["z"].data.any()


def test_member_named_twice_refused(tmp_path: Path) -> None:
    # The attack: a small file whose manifest names one large member many times.
    path = tmp_path / "f.npz"
    pyrt.save({"w": pyrt.zeros(1000)}, path)
    _rewrite_manifest(path, lambda m: {**m, "tree": {"list": [{"array": "a0", "tensor": True}] * 300}})
    with pytest.raises(ValueError, match="names array 'a0' more than once"):
        pyrt.load(path)


@pytest.mark.parametrize("depth", [150, 100_000])
def test_deep_manifest_refused(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "f.npz"
    pyrt.save({"w": 1}, path)
    nested = '{"list": [' * depth + '{"value": 1}' + "]}" * depth
    _rewrite_manifest(path, lambda m: json.dumps({**m, "tree": "X"}).replace('"X"', nested).encode())
    with pytest.raises(ValueError, match="nested"):
        pyrt.load(path)


def _zip_bytes(path: Path) -> bytearray:
    return bytearray(path.read_bytes())


def _patch_declared_size(data: bytearray, member: bytes, size: int) -> None:
    """Set ``member``'s uncompressed size in the zip's central directory (where zipfile reads it)."""
    entry = data.index(b"PK\x01\x02")
    while True:
        name_length = int.from_bytes(data[entry + 28:entry + 30], "little")
        if data[entry + 46:entry + 46 + name_length] == member:
            data[entry + 24:entry + 28] = size.to_bytes(4, "little")
            return
        entry = data.index(b"PK\x01\x02", entry + 4)


@pytest.mark.parametrize("compressed", [False, True])
def test_declared_size_larger_than_the_file_refused(tmp_path: Path, compressed: bool) -> None:
    path = tmp_path / "f.npz"
    (np.savez_compressed if compressed else np.savez)(path, w=np.ones(100, np.float32))
    data = _zip_bytes(path)
    _patch_declared_size(data, b"w.npy", 0x7FFF_FFFF)  # 2 GB
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"member 'w' declares 2147483647 bytes"):
        pyrt.load(path)


def test_truncated_array_reported_as_truncated_not_as_pickle(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (1000,)})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", header.getvalue() + b"\0" * 40)  # 10 of 1000 floats
    with pytest.raises(ValueError, match=r"member 'w' declares float32 \(1000,\), 4000 bytes, but holds 40"):
        pyrt.load(path)


def test_corrupted_bytes_anywhere_give_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    pyrt.save({"w": pyrt.ones(64), "b": pyrt.zeros(8)}, path)
    clean = path.read_bytes()
    rng = np.random.default_rng(0)
    for offset in rng.integers(0, len(clean), size=60):
        damaged = bytearray(clean)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            pyrt.load(path)  # array data is CRC-checked; a few header fields (dates) are not read
        except ValueError:
            continue
        except Exception as exc:
            raise AssertionError(f"byte {offset}: {type(exc).__name__}: {exc}") from exc
    for length in range(0, len(clean), max(1, len(clean) // 40)):
        path.write_bytes(clean[:length])
        with pytest.raises(ValueError, match=r"not a pyrt checkpoint|corrupt"):
            pyrt.load(path)


# --- how save writes ----------------------------------------------------------------

def test_saved_file_mode_follows_umask_or_the_replaced_file(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        pyrt.save({"w": 1}, tmp_path / "new.pt")
        assert (tmp_path / "new.pt").stat().st_mode & 0o777 == 0o644
        (tmp_path / "private.pt").write_bytes(b"")
        os.chmod(tmp_path / "private.pt", 0o600)
        pyrt.save({"w": 1}, tmp_path / "private.pt")
        assert (tmp_path / "private.pt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_save_through_a_symlink_replaces_its_target(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.pt"
    pyrt.save({"w": 1}, target)
    link = tmp_path / "latest.pt"
    link.symlink_to(target)
    pyrt.save({"w": 2}, link)
    assert link.is_symlink() and pyrt.load(target)["w"] == 2
    assert sorted(os.listdir(tmp_path / "real")) == ["model.pt"]


def test_next_save_removes_a_killed_saves_temporary_file(tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = socket.gethostname()
    dead = tmp_path / f".model.pt.pyrt-save.{host}.{child.pid}.abc123.tmp"
    alive = tmp_path / f".model.pt.pyrt-save.{host}.{os.getpid()}.def456.tmp"
    other_host = tmp_path / f".model.pt.pyrt-save.other-{host}.{child.pid}.ghi789.tmp"
    for leftover in (dead, alive, other_host):
        leftover.write_bytes(b"half a checkpoint")
    child.send_signal(signal.SIGKILL)
    child.wait()
    pyrt.save({"w": 1}, tmp_path / "model.pt")
    assert not dead.exists()  # its writer is gone
    assert alive.exists() and other_host.exists()  # a live writer's, or one we cannot check
