"""``DeviceMesh``: the world's ranks laid out as an n-d grid, one process group per grid line.

A DP x PP x TP job arranges its ranks as a (dp, pp, tp) array, last dimension
fastest (row-major, as PyTorch's ``init_device_mesh``)::

    init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))

    mesh = [[0, 1],        tp groups: {0, 1}, {2, 3}   (rows: neighbours, the most traffic)
            [2, 3]]        dp groups: {0, 2}, {1, 3}   (columns)

Tensor parallelism all-reduces activations in every layer, forward and
backward, while data parallelism reduces gradients once per step; keeping
the tp dimension fastest puts a tp group on adjacent ranks, which on a real
cluster are the ones sharing a node.

Every group of every dimension is built once, when the mesh is made
(``new_group`` is collective over the world, so every rank builds all of
them in the same order); ``mesh.get_group("tp")`` or ``mesh["tp"].get_group()``
returns this rank's. DDP (``process_group=``), pipeline stages (``group=``) and
the tensor-parallel layers (``group=``) take these groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pyrt.distributed.process_group import ProcessGroup, default_group, new_group

__all__ = ["DeviceMesh", "init_device_mesh", "mesh_dim_groups"]


def mesh_dim_groups(mesh: np.ndarray, dim: int) -> list[list[int]]:
    """The rank lists of every group along ``dim``: each line of the grid in that direction.

    Pure arithmetic on the rank array, so it can be checked without MPI.

    >>> mesh = np.arange(8).reshape(2, 2, 2)      # (dp, pp, tp)
    >>> mesh_dim_groups(mesh, 2)                  # tp: neighbours
    [[0, 1], [2, 3], [4, 5], [6, 7]]
    >>> mesh_dim_groups(mesh, 0)                  # dp: a stride of pp * tp
    [[0, 4], [1, 5], [2, 6], [3, 7]]
    """
    lines = np.moveaxis(mesh, dim, -1).reshape(-1, mesh.shape[dim])
    return [[int(r) for r in line] for line in lines]


class DeviceMesh:
    """An n-d grid of global ranks with a process group along every dimension.

    Build it with ``init_device_mesh`` (the usual way) or from an explicit rank
    array; either way every rank of the world must construct it, since the
    groups come from the collective ``new_group``. Indexing by dimension name
    gives the sub-mesh through this rank (``mesh["tp"]`` is the 1-d mesh of
    this rank's tensor-parallel group).

    Example (under ``mpiexec -n 4``)::

        mesh = DeviceMesh("cpu", [[0, 1], [2, 3]], mesh_dim_names=("dp", "tp"))
        mesh.get_group("tp")        # ranks {0, 1} on ranks 0 and 1, {2, 3} on 2 and 3
        mesh["dp"].size()           # 2
        mesh.get_coordinate()       # [1, 0] on rank 2
    """

    def __init__(self, device_type: str, mesh: Any, *, mesh_dim_names: Sequence[str] | None = None,
                 _groups: list[ProcessGroup | None] | None = None) -> None:
        if device_type != "cpu":
            raise ValueError(f"DeviceMesh: pyrt's ranks compute on the CPU, got device_type={device_type!r}")
        ranks = np.array(mesh, dtype=np.int64)
        if ranks.ndim == 0 or ranks.size == 0:
            raise ValueError(
                f"DeviceMesh: the mesh must be a non-empty array of ranks, got shape {ranks.shape}")
        world = default_group().size()
        flat = ranks.reshape(-1)
        if len(set(flat.tolist())) != flat.size or flat.min() < 0 or flat.max() >= world:
            raise ValueError(
                f"DeviceMesh: the mesh {ranks.tolist()} must hold distinct global ranks in [0, {world})")
        names = None if mesh_dim_names is None else tuple(mesh_dim_names)
        if names is not None and (len(names) != ranks.ndim or len(set(names)) != len(names)):
            raise ValueError(
                f"DeviceMesh: mesh_dim_names {names} must name each of the mesh's {ranks.ndim} "
                f"dimensions (shape {ranks.shape}) once")
        self.device_type = device_type
        self.mesh = ranks
        self.mesh_dim_names = names
        me = default_group().rank()
        found = np.argwhere(ranks == me)
        self._coordinate = [int(c) for c in found[0]] if len(found) else None
        self._groups = _groups if _groups is not None else self._build_groups()

    def _build_groups(self) -> list[ProcessGroup | None]:
        """This rank's group along each dimension (None if this rank is outside the mesh)."""
        mine: list[ProcessGroup | None] = []
        me = default_group().rank()
        for dim in range(self.ndim):
            label = self.mesh_dim_names[dim] if self.mesh_dim_names else f"dim{dim}"
            found = None
            for index, ranks in enumerate(mesh_dim_groups(self.mesh, dim)):
                # Every world rank enters every new_group, in the same order (Comm.Split).
                group = new_group(ranks)
                group.name = f"{label}{index}"
                if me in ranks:
                    found = group
            mine.append(found)
        return mine

    @property
    def ndim(self) -> int:
        return self.mesh.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.mesh.shape)

    def _dim(self, mesh_dim: int | str | None, what: str) -> int:
        if mesh_dim is None:
            if self.ndim != 1:
                raise ValueError(f"DeviceMesh.{what}: the mesh has {self.ndim} dimensions "
                                 f"{self.mesh_dim_names or self.shape}; say which (mesh_dim=)")
            return 0
        if isinstance(mesh_dim, str):
            if not self.mesh_dim_names or mesh_dim not in self.mesh_dim_names:
                raise KeyError(f"DeviceMesh: no dimension named {mesh_dim!r}; the mesh's dimensions "
                               f"are {self.mesh_dim_names}")
            return self.mesh_dim_names.index(mesh_dim)
        if not -self.ndim <= mesh_dim < self.ndim:
            raise IndexError(f"DeviceMesh: dimension {mesh_dim} is outside a {self.ndim}-d mesh")
        return mesh_dim % self.ndim

    def size(self, mesh_dim: int | str | None = None) -> int:
        """Number of ranks in the mesh, or along one dimension.

        Example: ``init_device_mesh("cpu", (2, 2)).size(1)`` is 2.
        """
        return int(self.mesh.size) if mesh_dim is None else self.shape[self._dim(mesh_dim, "size")]

    def get_group(self, mesh_dim: int | str | None = None) -> ProcessGroup:
        """This rank's process group along ``mesh_dim`` (optional on a 1-d mesh).

        Example: ``DistributedDataParallel(model, process_group=mesh.get_group("dp"))``.
        """
        dim = self._dim(mesh_dim, "get_group")
        group = self._groups[dim]
        if group is None:
            raise ValueError(f"DeviceMesh.get_group: rank {default_group().rank()} is not in the mesh "
                             f"{self.mesh.tolist()}")
        return group

    def get_all_groups(self) -> list[ProcessGroup]:
        """This rank's group along every dimension, in dimension order.

        Example: ``dp_group, tp_group = mesh.get_all_groups()``.
        """
        return [self.get_group(d) for d in range(self.ndim)]

    def get_local_rank(self, mesh_dim: int | str | None = None) -> int:
        """This rank's index along ``mesh_dim`` (its rank in that dimension's group).

        Example: on rank 3 of a (2, 2) mesh, ``get_local_rank("tp")`` is 1.
        """
        return self.get_group(mesh_dim).rank()

    def get_rank(self) -> int:
        """This process's global rank.

        Example: ``mesh.get_rank() == dist.get_rank()``.
        """
        return default_group().rank()

    def get_coordinate(self) -> list[int] | None:
        """This rank's index along every dimension, or None when it is not in the mesh.

        Example: rank 2 of ``init_device_mesh("cpu", (2, 2))`` is at ``[1, 0]``.
        """
        return None if self._coordinate is None else list(self._coordinate)

    def __getitem__(self, names: str | Sequence[str]) -> DeviceMesh:
        """The sub-mesh through this rank spanning the named dimensions, which share this mesh's groups.

        Example: ``mesh["tp"].get_group()`` is ``mesh.get_group("tp")``;
        ``mesh["dp", "tp"]`` drops the pipeline dimension of a (dp, pp, tp) mesh.
        """
        wanted = (names,) if isinstance(names, str) else tuple(names)
        dims = [self._dim(name, "__getitem__") for name in wanted]
        if len(set(dims)) != len(dims):
            raise ValueError(f"DeviceMesh: dimensions {wanted} repeat")
        if self._coordinate is None:
            raise ValueError(
                f"DeviceMesh: rank {default_group().rank()} is not in the mesh; it has no sub-mesh")
        # Fix every other dimension at this rank's coordinate.
        index = tuple(slice(None) if d in dims else self._coordinate[d] for d in range(self.ndim))
        kept = sorted(dims)  # the slice keeps its axes in mesh order; reorder them as asked
        sub = np.transpose(self.mesh[index], [kept.index(d) for d in dims])
        return DeviceMesh(self.device_type, sub, mesh_dim_names=wanted,
                          _groups=[self._groups[d] for d in dims])

    def __repr__(self) -> str:
        names = f", mesh_dim_names={self.mesh_dim_names}" if self.mesh_dim_names else ""
        return f"DeviceMesh('{self.device_type}', {self.mesh.tolist()}{names})"


def init_device_mesh(device_type: str, mesh_shape: Sequence[int], *,
                     mesh_dim_names: Sequence[str] | None = None) -> DeviceMesh:
    """Lay the world's ranks out as a grid of ``mesh_shape`` (last dimension fastest).

    PyTorch's signature. The product of ``mesh_shape`` must equal the world
    size; every rank of the world must call it (it builds every group).

    Example (under ``mpiexec -n 4``)::

        mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
        model = DistributedDataParallel(TensorParallelMLP(64, 256, group=mesh["tp"]),
                                        process_group=mesh.get_group("dp"))
    """
    shape = tuple(int(n) for n in mesh_shape)
    world = default_group().size()
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"init_device_mesh: mesh_shape must be positive sizes, got {tuple(mesh_shape)}")
    if int(np.prod(shape)) != world:
        raise ValueError(
            f"init_device_mesh: mesh_shape {shape} holds {int(np.prod(shape))} ranks but the world has "
            f"{world}; the product of the mesh's sizes must equal the world size")
    return DeviceMesh(device_type, np.arange(world).reshape(shape), mesh_dim_names=mesh_dim_names)
