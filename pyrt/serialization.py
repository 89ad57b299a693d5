"""``pyrt.save`` / ``pyrt.load``: checkpoints as ``.npz`` archives, never pickle.

A checkpoint is a tree of mappings, lists and tuples whose leaves are tensors,
numpy arrays, or plain scalars (``int``, ``float``, ``bool``, ``str``,
``None``): a module's ``state_dict()``, an optimizer's, or a dict holding both
plus an epoch counter. Each array becomes one ``.npy`` member (``a0``, ``a1``,
...); the tree itself, in order and with its key types, is stored as JSON in
the member ``__pyrt__`` (bytes in a ``uint8`` array). Loading parses the npy
headers and the JSON itself and never unpickles, so a checkpoint can never run
code; every member's declared size is checked against the file before its
array is allocated, and any damage is one ``ValueError`` saying what is wrong.

A plain ``np.savez`` archive (no ``__pyrt__`` member) loads as a flat mapping
of its members, in archive order.

>>> import io, pyrt
>>> from pyrt import nn
>>> buffer = io.BytesIO()
>>> pyrt.save(nn.Linear(3, 2).state_dict(), buffer)
>>> _ = buffer.seek(0)
>>> list(pyrt.load(buffer))
['weight', 'bias']
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import struct
import tempfile
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from pyrt.backend import get_array_module, is_cuda_array, move_array
from pyrt.cuda import parse_device
from pyrt.tensor import Tensor

__all__ = ["load", "save"]

_MANIFEST = "__pyrt__"
_FORMAT = "pyrt.checkpoint"
_VERSION = 1
_MAX_DEPTH = 100
# Deflate emits at least one bit per 258-byte match, so no member expands by more (zlib's own
# figure is 1032:1); a larger declared size is a lie told to make load allocate.
_MAX_DEFLATE_RATIO = 1032
_NPY_MAGIC = b"\x93NUMPY"

PathOrFile = str | os.PathLike[str] | IO[bytes]


# --- the tree <-> (JSON, arrays) codec ---------------------------------------------

def _encode(obj: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    if isinstance(obj, (Tensor, np.ndarray)) or is_cuda_array(obj):
        array = obj.data if isinstance(obj, Tensor) else obj
        xp = get_array_module(array)
        array = np.asarray(array) if xp is np else xp.asnumpy(array)
        if array.dtype.hasobject or array.dtype.kind not in "biufc":
            raise TypeError(f"pyrt.save: {where} is an array of dtype {array.dtype}; only "
                            "numeric and bool arrays can be saved")
        name = f"a{len(arrays)}"
        arrays[name] = array
        return {"array": name, "tensor": isinstance(obj, Tensor)}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    if isinstance(obj, Mapping):
        items = []
        for key, value in obj.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"pyrt.save: {where} has a key {key!r} of type "
                                f"{type(key).__name__}; keys must be str or int")
            items.append([key, _encode(value, arrays, f"{where}[{key!r}]")])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        kind = "tuple" if isinstance(obj, tuple) else "list"
        return {kind: [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]}
    raise TypeError(f"pyrt.save: cannot save {where} of type {type(obj).__name__}; a checkpoint "
                    "holds tensors, numpy arrays, numbers, strings, None, and dicts/lists of them")


def _decode(node: Any, archive: _Archive, depth: int = 0,
            device: tuple[str, int | None] = ("cpu", None)) -> Any:
    source = archive.source
    if depth > _MAX_DEPTH:
        # A state dict is a few levels deep; a deeper manifest is an attack on the
        # recursion limit, refused long before Python's own RecursionError.
        raise ValueError(f"pyrt.load: {source} is corrupt (manifest nested deeper than {_MAX_DEPTH})")
    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise ValueError(f"pyrt.load: {source} is corrupt (unexpected manifest entry {node!r:.80})")
    if "array" in node:
        array = archive.read_once(node["array"])
        return Tensor(move_array(array, *device)) if node.get("tensor") else array
    if "value" in node:
        return node["value"]
    if "dict" in node:
        items = node["dict"]
        if not isinstance(items, list) or not all(
                isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))
                for item in items):
            raise ValueError(f"pyrt.load: {source} is corrupt (malformed mapping {items!r:.80})")
        return OrderedDict((key, _decode(value, archive, depth + 1, device)) for key, value in items)
    if "list" in node:
        return [_decode(value, archive, depth + 1, device) for value in node["list"]]
    if "tuple" in node:
        return tuple(_decode(value, archive, depth + 1, device) for value in node["tuple"])
    raise ValueError(f"pyrt.load: {source} is corrupt (unknown manifest entry {node!r:.80})")


# --- reading members: every size checked before anything is allocated -----------------

class _Archive:
    """The ``.npy`` members of a zip archive, each readable once.

    Each member's npy header (dtype, shape) is checked against the size the
    zip directory declares for it, and that size against what its compressed
    bytes can physically hold, before its array is allocated: a few KB of
    file can then never make ``load`` allocate gigabytes. A manifest naming
    one member twice is refused for the same reason.
    """

    def __init__(self, zf: zipfile.ZipFile, source: str) -> None:
        self.zf, self.source = zf, source
        # np.savez names a member "<key>.npy"; NpzFile (and so a plain archive's keys) drops the suffix.
        self.members = {info.filename.removesuffix(".npy"): info for info in zf.infolist()}
        self.read_names: set[str] = set()

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def read_once(self, name: Any) -> np.ndarray:
        if not isinstance(name, str) or name not in self.members:
            raise ValueError(f"pyrt.load: {self.source} is corrupt (array {name!r} is missing)")
        if name in self.read_names:
            raise ValueError(f"pyrt.load: {self.source} is corrupt (the manifest names array "
                             f"{name!r} more than once)")
        self.read_names.add(name)
        return self.read(name)

    def read(self, name: str) -> np.ndarray:
        info = self.members[name]
        where = f"{self.source} is corrupt (member {name!r}"
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise ValueError(f"pyrt.load: {where} declares {info.file_size} bytes stored in "
                             f"{info.compress_size})")
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > (
                _MAX_DEFLATE_RATIO * info.compress_size + 1024):
            raise ValueError(f"pyrt.load: {where} declares {info.file_size} bytes from "
                             f"{info.compress_size} compressed, more than deflate can expand to)")
        try:
            with self.zf.open(info) as member:
                dtype, shape, order = self._header(member, name)
                size = math.prod(shape) * dtype.itemsize
                if member.tell() + size != info.file_size:
                    raise ValueError(f"pyrt.load: {where} declares {dtype} {shape}, {size} bytes, "
                                     f"but holds {info.file_size - member.tell()})")
                array = np.empty(shape, dtype=dtype, order=order)
                view = memoryview(array.reshape(-1, order="A").view(np.uint8))
                filled = 0
                while filled < size:
                    count = member.readinto(view[filled:])
                    if not count:
                        raise ValueError(f"pyrt.load: {where} ends after {filled} of {size} bytes)")
                    filled += count
                return array
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
                zlib.error, struct.error) as exc:
            # zipfile reports a damaged archive through any of these.
            raise ValueError(f"pyrt.load: {where}: {type(exc).__name__}: {exc})") from None

    def _header(self, member: IO[bytes], name: str) -> tuple[np.dtype, tuple[int, ...], str]:
        where = f"{self.source} is corrupt (member {name!r}"
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
            else:  # 3.0 exists only for structured dtypes' unicode field names
                raise ValueError(f"npy format version {version} is not supported")
        except ValueError as exc:
            raise ValueError(f"pyrt.load: {where} has no valid npy header: {exc})") from None
        if dtype.hasobject:
            raise ValueError(f"pyrt.load: refusing to load member {name!r} of {self.source}: it "
                             "holds Python objects (pickle), which could run code")
        if dtype.kind not in "biufc":
            raise ValueError(f"pyrt.load: {where} has dtype {dtype}; checkpoints hold numeric arrays)")
        return dtype, shape, "F" if fortran else "C"


# --- public API ---------------------------------------------------------------------

def save(obj: Any, f: PathOrFile) -> None:
    """Write a state dict (or a tree of them) to ``f``, a path or a binary file object.

    A path is written atomically: to a temporary file in the same directory,
    then renamed over the target, so a crash never leaves half a checkpoint
    (and the next save removes the temporary file a killed one left behind).
    The file gets the umask's mode, or keeps the mode of the file it
    replaces; a symlink keeps pointing at the new checkpoint.

    >>> import io, pyrt
    >>> buffer = io.BytesIO()
    >>> pyrt.save({"step": 3, "w": pyrt.ones(2)}, buffer)
    """
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(obj, arrays, "the object")
    manifest = json.dumps({"format": _FORMAT, "version": _VERSION, "tree": tree})
    members = {_MANIFEST: np.frombuffer(manifest.encode("utf-8"), dtype=np.uint8), **arrays}
    if not isinstance(f, (str, os.PathLike)):
        np.savez(f, **members)  # type: ignore[arg-type]
        return
    # Through a symlink, replace the file it points to and keep the link, as open(path, "wb") does.
    path = os.path.realpath(f)
    directory, name = os.path.split(path)
    _remove_abandoned_temporaries(directory, name)
    # The host and pid in the name tell a later save whether this writer is still alive.
    prefix = f".{name}.pyrt-save.{socket.gethostname()}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=_TMP_SUFFIX)
    try:
        # mkstemp creates 0600; give the file the mode open() would (or the mode of the file
        # it replaces), as numpy and PyTorch do.
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "wb") as out:
            # A file object, not the path: np.savez would append ".npz" to a path.
            np.savez(out, **members)  # type: ignore[arg-type]
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_TMP_SUFFIX = ".tmp"


def _mode_for(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)  # the only portable way to read it
        os.umask(umask)
        return 0o666 & ~umask


def _remove_abandoned_temporaries(directory: str, name: str) -> None:
    """Delete temporary files of earlier saves to ``name`` whose writer has died.

    A save killed by SIGKILL (or a power cut) cannot clean up after itself;
    the next save to the same path does, for writers on this host that no
    longer exist. A live writer's file, or another host's, is left alone.
    """
    host = socket.gethostname()
    stem = f".{name}.pyrt-save.{host}."
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(stem) and entry.endswith(_TMP_SUFFIX)):
            continue
        pid = entry[len(stem):].split(".", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def load(f: PathOrFile, map_location: Any = None, *, weights_only: bool = True) -> Any:
    """Read a checkpoint written by ``save`` (or a plain ``np.savez`` archive).

    Mappings come back as ``OrderedDict`` in saved order, tensors as Tensors.
    ``map_location`` is the device the tensors load onto: ``None`` or ``"cpu"``
    (host memory; ``save`` always copies GPU arrays to the host), or a GPU
    (``"cuda[:N]"``, an int, a ``torch.device``), as in ``torch.load``.
    ``weights_only`` must be True: pyrt never unpickles.

    >>> import io, pyrt
    >>> buffer = io.BytesIO()
    >>> pyrt.save({"w": pyrt.ones(2)}, buffer)
    >>> _ = buffer.seek(0)
    >>> pyrt.load(buffer)["w"].tolist()
    [1.0, 1.0]
    """
    if isinstance(map_location, Mapping) or callable(map_location):
        raise ValueError(f"pyrt.load: map_location={map_location!r} is not supported; pass a device "
                         "('cpu', 'cuda:N', an int or a torch.device): checkpoints hold host arrays")
    device = ("cpu", None) if map_location is None else parse_device(map_location)
    if not weights_only:
        raise ValueError("pyrt.load: weights_only=False is not supported; pyrt never unpickles")
    source = repr(os.fspath(f)) if isinstance(f, (str, os.PathLike)) else "the file object"
    if isinstance(f, (str, os.PathLike)) and not os.path.exists(f):
        raise FileNotFoundError(f"pyrt.load: no such file: {os.fspath(f)!r}")
    with contextlib.ExitStack() as stack:
        file = stack.enter_context(open(f, "rb")) if isinstance(f, (str, os.PathLike)) else f
        start = file.tell()
        if file.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
            raise ValueError(f"pyrt.load: {source} is a single .npy array, not a checkpoint "
                             "(.npz archive)")
        file.seek(start)
        try:
            zf = stack.enter_context(zipfile.ZipFile(file))
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise ValueError(f"pyrt.load: {source} is not a pyrt checkpoint (.npz archive): "
                             f"{exc}") from None
        archive = _Archive(zf, source)
        if _MANIFEST not in archive.members:
            return OrderedDict((name, Tensor(move_array(archive.read_once(name), *device)))
                               for name in archive.names)
        manifest = _read_manifest(archive.read_once(_MANIFEST), source)
        try:
            return _decode(manifest["tree"], archive, device=device)
        except (TypeError, KeyError) as exc:  # a manifest edited into the wrong shape
            raise ValueError(f"pyrt.load: {source} is corrupt (bad manifest: {exc!r})") from None


def _read_manifest(raw: np.ndarray, source: str) -> dict[str, Any]:
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"pyrt.load: {source} is corrupt (unreadable manifest: {exc})") from None
    except RecursionError:
        raise ValueError(f"pyrt.load: {source} is corrupt (manifest nested too deeply)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT or "tree" not in manifest:
        raise ValueError(f"pyrt.load: {source} is corrupt (manifest is not a pyrt checkpoint's)")
    if manifest.get("version") != _VERSION:
        raise ValueError(f"pyrt.load: {source} is checkpoint format version "
                         f"{manifest.get('version')}; this pyrt reads version {_VERSION}")
    return manifest

