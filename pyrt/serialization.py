"""``pyrt.save`` / ``pyrt.load``: checkpoints as ``.npz`` archives, never pickle.

A checkpoint is a tree of mappings, lists and tuples whose leaves are tensors,
numpy arrays, or plain scalars (``int``, ``float``, ``bool``, ``str``,
``None``): a module's ``state_dict()``, an optimizer's, or a dict holding both
plus an epoch counter. Each array becomes one ``.npy`` member (``a0``, ``a1``,
...); the tree itself, in order and with its key types, is stored as JSON in
the member ``__pyrt__`` (bytes in a ``uint8`` array). Loading uses
``np.load(allow_pickle=False)`` and ``json``, so a checkpoint can never run code;
an archive holding object arrays is refused.

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

import json
import os
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from pyrt.backend import get_array_module
from pyrt.tensor import Tensor

__all__ = ["load", "save"]

_MANIFEST = "__pyrt__"
_FORMAT = "pyrt.checkpoint"
_VERSION = 1

PathOrFile = str | os.PathLike[str] | IO[bytes]


# --- the tree <-> (JSON, arrays) codec ---------------------------------------------

def _encode(obj: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    if isinstance(obj, (Tensor, np.ndarray)):
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


def _decode(node: Any, archive: Any, source: str) -> Any:
    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise ValueError(f"pyrt.load: {source} is corrupt (unexpected manifest entry {node!r:.80})")
    if "array" in node:
        name = node["array"]
        if not isinstance(name, str) or name not in archive.files:
            raise ValueError(f"pyrt.load: {source} is corrupt (array {name!r} is missing)")
        array = _read_member(archive, name, source)
        return Tensor(array) if node.get("tensor") else array
    if "value" in node:
        return node["value"]
    if "dict" in node:
        items = node["dict"]
        if not isinstance(items, list) or not all(
                isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))
                for item in items):
            raise ValueError(f"pyrt.load: {source} is corrupt (malformed mapping {items!r:.80})")
        return OrderedDict((key, _decode(value, archive, source)) for key, value in items)
    if "list" in node:
        return [_decode(value, archive, source) for value in node["list"]]
    if "tuple" in node:
        return tuple(_decode(value, archive, source) for value in node["tuple"])
    raise ValueError(f"pyrt.load: {source} is corrupt (unknown manifest entry {node!r:.80})")


def _read_member(archive: Any, name: str, source: str) -> np.ndarray:
    try:
        return archive[name]
    except ValueError as exc:
        # numpy refuses object arrays under allow_pickle=False; say why we do too.
        raise ValueError(f"pyrt.load: refusing to load member {name!r} of {source}: it holds "
                         f"Python objects (pickle), which could run code ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"pyrt.load: {source} is corrupt (member {name!r}: {exc})") from None


# --- public API ---------------------------------------------------------------------

def save(obj: Any, f: PathOrFile) -> None:
    """Write a state dict (or a tree of them) to ``f``, a path or a binary file object.

    A path is written atomically: to a temporary file in the same directory,
    then renamed over the target, so a crash never leaves half a checkpoint.

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
    path = os.fspath(f)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pyrt-save-", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            # A file object, not the path: np.savez would append ".npz" to a path.
            np.savez(out, **members)  # type: ignore[arg-type]
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(f: PathOrFile, map_location: Any = None, *, weights_only: bool = True) -> Any:
    """Read a checkpoint written by ``save`` (or a plain ``np.savez`` archive).

    Mappings come back as ``OrderedDict`` in saved order, tensors as Tensors.
    ``map_location`` may be ``None`` or ``"cpu"`` and ``weights_only`` must be
    True: they exist so ``torch.load(path, map_location="cpu")`` ports as is.

    >>> import io, pyrt
    >>> buffer = io.BytesIO()
    >>> pyrt.save({"w": pyrt.ones(2)}, buffer)
    >>> _ = buffer.seek(0)
    >>> pyrt.load(buffer)["w"].tolist()
    [1.0, 1.0]
    """
    if map_location not in (None, "cpu"):
        raise ValueError(f"pyrt.load: map_location={map_location!r} is not supported; "
                         "checkpoints always load as CPU arrays")
    if not weights_only:
        raise ValueError("pyrt.load: weights_only=False is not supported; pyrt never unpickles")
    source = repr(os.fspath(f)) if isinstance(f, (str, os.PathLike)) else "the file object"
    if isinstance(f, (str, os.PathLike)) and not os.path.exists(f):
        raise FileNotFoundError(f"pyrt.load: no such file: {os.fspath(f)!r}")
    try:
        archive = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"pyrt.load: {source} is not a pyrt checkpoint (.npz archive): "
                         f"{exc}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"pyrt.load: {source} is a single .npy array, not a checkpoint "
                         "(.npz archive)")
    with archive:
        if _MANIFEST not in archive.files:
            return OrderedDict((name, Tensor(_read_member(archive, name, source)))
                               for name in archive.files)
        manifest = _read_manifest(_read_member(archive, _MANIFEST, source), source)
        try:
            return _decode(manifest["tree"], archive, source)
        except (TypeError, KeyError) as exc:  # a manifest edited into the wrong shape
            raise ValueError(f"pyrt.load: {source} is corrupt (bad manifest: {exc!r})") from None


def _read_manifest(raw: np.ndarray, source: str) -> dict[str, Any]:
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"pyrt.load: {source} is corrupt (unreadable manifest: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT or "tree" not in manifest:
        raise ValueError(f"pyrt.load: {source} is corrupt (manifest is not a pyrt checkpoint's)")
    if manifest.get("version") != _VERSION:
        raise ValueError(f"pyrt.load: {source} is checkpoint format version "
                         f"{manifest.get('version')}; this pyrt reads version {_VERSION}")
    return manifest

