"""``DistributedDataParallel``: data parallelism with gradient buckets overlapped with backward.

What happens in one step, on every rank:
1. ``forward`` runs the wrapped module on this rank's shard of the batch and
   arms the buckets (and, with ``find_unused_parameters``, marks parameters the
   output does not depend on as ready).
2. ``loss.backward()`` produces gradients in roughly reverse registration order.
   Each parameter's post-accumulate-grad hook copies its gradient into its
   bucket; when a bucket is full it is all-reduced (averaged) asynchronously on
   the process group's communication thread, while backward goes on.
3. The hook of the last parameter waits for every bucket and points each
   ``param.grad`` at its averaged slice of a bucket. Buckets launch strictly in
   index order, so every rank issues the same collectives in the same order.

Every rank therefore holds identical gradients before ``optimizer.step()``,
and identical parameters after it.

Every bucket all-reduce carries the iteration it belongs to (an
``agreement.context``), so a rank that skipped a backward, or ran one more
step than the others, gets an error naming the iterations instead of
averaging its step n+1 with another rank's step n. Ranks with uneven amounts
of data train inside ``join()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from pyrt.autograd import is_grad_enabled, on_device_of
from pyrt.backend import get_array_module
from pyrt.distributed import agreement, shm
from pyrt.distributed.collectives import ReduceOp, all_reduce, broadcast, select_algorithm
from pyrt.distributed.process_group import ProcessGroup, resolve_group
from pyrt.distributed.work import Work
from pyrt.nn.module import Module
from pyrt.nn.parameter import Parameter
from pyrt.profiler import recorder as _profiling
from pyrt.tensor import Tensor

__all__ = ["DistributedDataParallel"]


@dataclasses.dataclass
class CommStats:
    """Where DDP's communication time went, summed over the steps since the last reset.

    ``hidden_fraction`` is the share of all-reduce time that ran while backward
    was still computing, i.e. was not spent with backward waiting for it.
    ``bucket_algorithms`` says which all-reduce each bucket runs (``"shm"``,
    ``"hierarchical"``, ``"ring"`` or ``"mpi"``; see ``all_reduce``).
    """

    steps: int = 0
    allreduce_seconds: float = 0.0
    wait_seconds: float = 0.0
    bucket_algorithms: list[str] = dataclasses.field(default_factory=list)

    def describe_buckets(self) -> str:
        """E.g. ``"33 buckets: 33 shm"``."""
        counts = {a: self.bucket_algorithms.count(a) for a in dict.fromkeys(self.bucket_algorithms)}
        n = len(self.bucket_algorithms)
        return f"{n} bucket{'s' * (n != 1)}: " + ", ".join(f"{c} {a}" for a, c in counts.items())

    @property
    def hidden_fraction(self) -> float:
        if self.allreduce_seconds == 0:
            return 0.0
        return max(0.0, 1.0 - self.wait_seconds / self.allreduce_seconds)


class _Bucket:
    """A flat buffer holding the gradients of a few parameters, all-reduced as one message.

    The buffer lives where the parameters do: for a model on a GPU it is a cupy array on that
    device (the averaged gradients stay views of it), which ``all_reduce`` stages through pinned
    host memory. On the CPU, ``storage`` (bytes of the group's shared memory) makes it a
    buffer every rank maps, which the shared-memory all-reduce reduces in place, zero-copy.
    """

    def __init__(self, index: int, params: list[tuple[str, Parameter]], storage: Any = None) -> None:
        self.index = index
        self.params = params
        self.offsets: list[int] = []
        total = 0
        for _, p in params:
            self.offsets.append(total)
            total += p.numel()
        first = params[0][1]
        if storage is not None:
            self.buffer = storage[:total * first.data.itemsize].view(first.dtype)
            self.buffer[...] = 0
        else:
            with on_device_of(first):
                self.buffer = get_array_module(first.data).zeros(total, dtype=first.dtype)
        self.done = [False] * len(params)
        self.ready = 0
        self.work: Work | None = None

    def slot(self, i: int) -> Any:
        p = self.params[i][1]
        return self.buffer[self.offsets[i]:self.offsets[i] + p.numel()].reshape(p.shape)


def _shared_bytes(params: list[tuple[str, Parameter]]) -> int:
    """Shared memory enough for any bucketing of ``params`` (each bucket padded to a cache line)."""
    return sum(p.data.nbytes for _, p in params) + shm.ALIGN * len(params)


def _build_buckets(ready_order: list[tuple[str, Parameter]], cap_bytes: int,
                   shared: np.ndarray | None = None) -> list[_Bucket]:
    """Buckets of the parameters in the order their gradients are expected, up to ``cap_bytes`` each,
    carved from ``shared`` (``_shared_bytes`` of the group's shared memory) when given.

    PyTorch also caps the first bucket at 1 MB, so communication starts early;
    measured here (python -m pyrt.bench ddp, 784-1024-512-10 MLP, 2 ranks on 2
    cores) that cost 1.5 ms of all-reduce per step (4.3 -> 5.9 ms): with one core
    per rank, an early all-reduce takes the core from backward rather than
    running beside it. So every bucket has the same cap. The default cap (25 MB,
    PyTorch's) comes from the same suite's sweep over caps, in alternating rounds: for
    these 5.3 MB of gradients 4 MB buckets (2) ran at 0.90-1.05x of one bucket, within the
    noise, and 1 MB buckets (5) at 0.85-0.95x, at 2 and at 4 ranks, in three runs. Each
    bucket pays a fixed cost (a wake-up of the communication thread, the agreement, two
    barriers) that nothing hides while the ranks have no spare core.
    """
    groups: list[list[tuple[str, Parameter]]] = []
    current: list[tuple[str, Parameter]] = []
    size = 0
    for name, p in ready_order:
        fits = size + p.data.nbytes <= cap_bytes and (not current or current[0][1].dtype == p.dtype)
        if current and not fits:
            groups.append(current)
            current, size = [], 0
        if current and current[0][1].device != p.device:
            raise ValueError(f"DistributedDataParallel: parameters {current[0][0]} ({current[0][1].device}) "
                             f"and {name} ({p.device}) are on different devices; one device per rank")
        current.append((name, p))
        size += p.data.nbytes
    if current:
        groups.append(current)
    buckets, offset = [], 0
    for index, params in enumerate(groups):
        storage = None
        if shared is not None:
            storage = shared[offset:]
            offset += -(-sum(p.data.nbytes for _, p in params) // shm.ALIGN) * shm.ALIGN
        buckets.append(_Bucket(index, params, storage))
    return buckets


def _launch_range(bucket: _Bucket, iteration: int) -> contextlib.AbstractContextManager[None]:
    """The profiler's range around a bucket's launch; its all-reduce on the comm track is named after it."""
    if _profiling.active is None:
        return contextlib.nullcontext()
    return _profiling.active.span(f"DDP bucket {bucket.index}", "ddp", {
        "bucket": bucket.index, "bytes": int(bucket.buffer.nbytes), "iteration": iteration,
        "params": [name for name, _ in bucket.params]})


def _reachable_leaves(outputs: Any) -> set[int]:
    """ids of the leaf tensors the autograd graph behind ``outputs`` reaches."""
    roots = [t.grad_fn for t in _tensors_in(outputs) if t.grad_fn is not None]
    seen_fns: set[int] = set()
    leaves: set[int] = {id(t) for t in _tensors_in(outputs) if t.requires_grad and t.grad_fn is None}
    stack = list(roots)
    while stack:
        fn = stack.pop()
        if id(fn) in seen_fns:
            continue
        seen_fns.add(id(fn))
        for t in fn.inputs:
            if t is None:
                continue
            if t.grad_fn is None:
                leaves.add(id(t))
            else:
                stack.append(t.grad_fn)
    return leaves


def _tensors_in(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _tensors_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors_in(v)


class DistributedDataParallel(Module):
    """Wrap ``module`` so that ``backward`` averages its gradients over the process group.

    At construction every rank checks that all ranks hold the same parameter
    names and shapes, then copies rank 0's parameters and buffers. Call it like
    the module it wraps; its ``state_dict`` has PyTorch's ``module.`` prefix.

    Example (under ``mpiexec -n 2``)::

        dist.init_process_group()
        model = DistributedDataParallel(nn.Linear(10, 1))
        loss = nn.MSELoss()(model(x_shard), y_shard)
        loss.backward()          # gradients are now averaged across ranks
        optimizer.step()
    """

    def __init__(self, module: Module, process_group: ProcessGroup | None = None,
                 bucket_cap_mb: float = 25.0, find_unused_parameters: bool = False,
                 broadcast_buffers: bool = True, algorithm: str = "auto",
                 device_ids: Any = None, output_device: Any = None) -> None:
        super().__init__()
        if bucket_cap_mb <= 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        object.__setattr__(self, "process_group", resolve_group(process_group, "DistributedDataParallel"))
        object.__setattr__(self, "find_unused_parameters", find_unused_parameters)
        object.__setattr__(self, "broadcast_buffers", broadcast_buffers)
        object.__setattr__(self, "algorithm", algorithm)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        # Ranks that disagree on these would build different buckets (and then
        # fail with messages about buffer sizes): say so in DDP's words first.
        agreement.agree(self.process_group, "DistributedDataParallel", {
            "bucket_cap_mb": float(bucket_cap_mb), "find_unused_parameters": find_unused_parameters,
            "broadcast_buffers": broadcast_buffers, "algorithm": algorithm})
        self._check_same_parameters(named)
        self._broadcast_state()
        object.__setattr__(self, "_cap_bytes", int(bucket_cap_mb * 1024 * 1024))
        object.__setattr__(self, "_named", named)
        object.__setattr__(self, "_shared", self._shared_storage(named))
        # Which parameters got a gradient on this rank in the current step.
        object.__setattr__(self, "_index", {id(p): k for k, (_, p) in enumerate(named)})
        object.__setattr__(self, "_locally_used", np.zeros(len(named), dtype=np.uint8))
        # Reverse registration order approximates the order backward produces gradients;
        # after the first iteration the buckets follow the order they really arrived in.
        self._set_buckets(list(reversed(named)))
        object.__setattr__(self, "_arrival_order", [])  # parameter indices, first iteration only
        object.__setattr__(self, "_buckets_rebuilt", False)
        object.__setattr__(self, "_require_sync", True)
        object.__setattr__(self, "_expect_reduction", False)
        object.__setattr__(self, "_next_bucket", 0)
        object.__setattr__(self, "_finish_later", False)
        object.__setattr__(self, "_iteration", 0)  # armed forwards so far: equal on every rank
        object.__setattr__(self, "_joining", False)
        object.__setattr__(self, "comm_stats", CommStats())
        self._describe_buckets()
        for _, p in named:
            p.register_post_accumulate_grad_hook(self._on_gradient_ready)

    # --- construction ----------------------------------------------------------------
    def _shared_storage(self, named: list[tuple[str, Parameter]]) -> np.ndarray | None:
        """Node shared memory for the buckets when their all-reduce is the shared-memory one (zero-copy),
        else None; collective."""
        node = self.process_group.node_shared_memory()
        if self.algorithm not in ("auto", "shm", "hierarchical") or node is None:
            return None
        on_host = all(isinstance(p.data, np.ndarray) and p.data.dtype in shm.DTYPES for _, p in named)
        if not named or not on_host:
            return None
        return node.allocate(_shared_bytes(named))

    def _set_buckets(self, ready_order: list[tuple[str, Parameter]]) -> None:
        buckets = _build_buckets(ready_order, self._cap_bytes, self._shared)
        object.__setattr__(self, "_buckets", buckets)
        slots = {id(p): (b, i) for b in buckets for i, (_, p) in enumerate(b.params)}
        object.__setattr__(self, "_slots", slots)

    def _describe_buckets(self) -> None:
        pg, algorithm = self.process_group, self.algorithm
        self.comm_stats.bucket_algorithms = [
            select_algorithm(b.buffer, ReduceOp.AVG, pg, algorithm) for b in self._buckets]

    def _rebuild_buckets(self) -> None:
        """Once, after the first iteration: buckets in the order gradients arrived (rank 0's order).

        Ranks must launch the same buckets in the same order, and their
        arrival orders may differ (threads, find_unused_parameters), so rank
        0's order is broadcast, as in PyTorch.
        """
        object.__setattr__(self, "_buckets_rebuilt", True)
        order = np.full(len(self._named), -1, dtype=np.int64)
        if len(self._arrival_order) == len(order):  # not on a rank that only shadowed (join())
            order[:] = self._arrival_order
        object.__setattr__(self, "_arrival_order", [])
        broadcast(order, src=self.process_group.global_ranks[0], group=self.process_group)
        if (order < 0).any():
            return  # rank 0 saw no full iteration: keep the buckets, on every rank alike
        # New buckets in shared memory reuse the old ones' bytes, which the gradients just
        # averaged still view: keep the values and move the gradients into the new buckets.
        kept = {id(p): p.grad.data.copy() for _, p in self._named
                if self._shared is not None and p.grad is not None}
        self._set_buckets([self._named[k] for k in order])
        for b in self._buckets:
            for i, (_, p) in enumerate(b.params):
                if id(p) in kept:
                    view = b.slot(i)
                    view[...] = kept[id(p)]
                    p.grad.data = view
        self._describe_buckets()

    def _check_same_parameters(self, named: list[tuple[str, Parameter]]) -> None:
        pg = self.process_group
        mine = [(n, tuple(p.shape), str(p.dtype)) for n, p in named]
        every = pg.comm.allgather(mine)
        for r, theirs in enumerate(every):
            if theirs != every[0]:
                first = next((a, b) for a, b in zip([*every[0], None], [*theirs, None], strict=False)
                             if a != b)
                raise ValueError(
                    "DistributedDataParallel: ranks hold different parameters: rank "
                    f"{pg.global_ranks[0]} has {first[0]} where rank {pg.global_ranks[r]} has "
                    f"{first[1]} (name, shape, dtype)"
                )

    def _broadcast_state(self) -> None:
        root = self.process_group.global_ranks[0]
        for t in self.module.state_dict(keep_vars=True).values():
            broadcast(t, src=root, group=self.process_group)

    # --- the step ----------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # A forward whose backward never ran (a skipped step) just re-arms; one
        # whose backward reached only some parameters is a model that leaves
        # parameters unused, which would make the other ranks wait.
        if self._expect_reduction and is_grad_enabled() and any(b.ready for b in self._buckets):
            missing = [n for n, p in self._named if not self._is_done(p)]
            raise RuntimeError(
                "DistributedDataParallel: the previous backward did not produce gradients for "
                f"parameters {missing}; if the model leaves parameters unused, pass "
                "find_unused_parameters=True"
            )
        if self._joining:
            self._join_round(alive=True)
        self._sync_buffers()
        output = self.module(*args, **kwargs)
        if self._require_sync and is_grad_enabled() and any(
                t.requires_grad for t in _tensors_in(output)):
            self._prepare_for_backward(output)
        return output

    def _sync_buffers(self) -> None:
        if self.broadcast_buffers:
            root = self.process_group.global_ranks[0]
            for b in self.module.buffers():
                broadcast(b, src=root, group=self.process_group)

    def _is_done(self, p: Parameter) -> bool:
        bucket, i = self._slots[id(p)]
        return bucket.done[i]

    def _prepare_for_backward(self, output: Any, finish_later: bool = False) -> None:
        """Arm the buckets for the backward of ``output``.

        ``finish_later``: the last bucket's hook launches it but does not wait;
        the caller calls ``_finish_reduction`` (a pipeline schedule, so that the
        stage's input gradient is sent before the reduction is waited for).
        """
        object.__setattr__(self, "_finish_later", finish_later)
        self._locally_used[...] = False
        for b in self._buckets:
            b.ready, b.work = 0, None
            b.done = [False] * len(b.params)
        object.__setattr__(self, "_next_bucket", 0)
        object.__setattr__(self, "_expect_reduction", True)
        object.__setattr__(self, "_iteration", self._iteration + 1)
        reachable = _reachable_leaves(output)
        unused = [self._slots[id(p)] for _, p in self._named if id(p) not in reachable]
        if unused and not self.find_unused_parameters:
            object.__setattr__(self, "_expect_reduction", False)
            names = [b.params[i][0] for b, i in unused]
            raise RuntimeError(
                f"DistributedDataParallel: parameters {names} are not used to compute the output, "
                "so they would never receive a gradient and the other ranks would wait for them; "
                "pass find_unused_parameters=True"
            )
        for b, i in unused:
            p = b.params[i][1]
            # A gradient accumulated under no_sync() still has to be reduced.
            with on_device_of(p):
                if p.grad is not None:
                    b.slot(i)[...] = p.grad.data
                else:
                    b.slot(i)[...] = 0
            self._locally_used[self._index[id(p)]] = p.grad is not None
            self._mark_ready(b, i)

    def _on_gradient_ready(self, p: Tensor) -> None:
        if not self._expect_reduction:
            return  # forward ran under no_sync(): gradients just accumulate locally
        bucket, i = self._slots[id(p)]
        if bucket.done[i]:
            raise RuntimeError(
                f"DistributedDataParallel: parameter {bucket.params[i][0]} received its gradient "
                "twice in one backward; call forward again before the next backward"
            )
        with on_device_of(p):
            bucket.slot(i)[...] = p.grad.data
        self._locally_used[self._index[id(p)]] = True
        self._mark_ready(bucket, i)

    def _mark_ready(self, bucket: _Bucket, i: int) -> None:
        bucket.done[i] = True
        bucket.ready += 1
        if not self._buckets_rebuilt:
            self._arrival_order.append(self._index[id(bucket.params[i][1])])
        # Launch in index order: every rank must issue the same all-reduces in the same order.
        while (self._next_bucket < len(self._buckets)
               and self._buckets[self._next_bucket].ready == len(self._buckets[self._next_bucket].params)):
            b = self._buckets[self._next_bucket]
            with agreement.context("DDP iteration", self._iteration), _launch_range(b, self._iteration):
                b.work = all_reduce(b.buffer, op=ReduceOp.AVG, group=self.process_group,
                                    async_op=True, algorithm=self.algorithm)
            object.__setattr__(self, "_next_bucket", self._next_bucket + 1)
        if self._next_bucket == len(self._buckets) and not self._finish_later:
            self._finish_reduction()

    def _finish_reduction(self) -> None:
        object.__setattr__(self, "_expect_reduction", False)
        start = time.perf_counter()
        with _profiling.range_if_active("DDP wait for buckets", "ddp"):
            for b in self._buckets:
                b.work.wait()
        self.comm_stats.wait_seconds += time.perf_counter() - start
        self.comm_stats.allreduce_seconds += sum(b.work.seconds or 0.0 for b in self._buckets)
        self.comm_stats.steps += 1
        used = self._locally_used
        if self.find_unused_parameters:
            # A parameter no rank used keeps grad None, as in PyTorch, so the
            # optimizer leaves it (and its moments and weight decay) alone.
            with agreement.context("DDP iteration", self._iteration):
                all_reduce(used, op=ReduceOp.MAX, group=self.process_group, algorithm="mpi")
        for b in self._buckets:
            for i, (_, p) in enumerate(b.params):
                if not used[self._index[id(p)]]:
                    continue
                # The averaged gradient is a view of the bucket (PyTorch's
                # gradient_as_bucket_view): no copy back.
                view = b.slot(i)
                if p.grad is None:
                    p.grad = Tensor(view)
                else:
                    p.grad.data = view
        if not self._buckets_rebuilt:
            # The gradients just set stay views of the old buckets until the next backward.
            self._rebuild_buckets()

    @contextlib.contextmanager
    def join(self, divide_by_initial_world_size: bool = True, enable: bool = True,
             throw_on_early_termination: bool = False) -> Iterator[None]:
        """Train on uneven amounts of data per rank (PyTorch's ``model.join()``).

        Inside the block every forward first counts the ranks still training
        (one small all-reduce). A rank whose loop ends waits at the end of the
        block, shadowing the others' collectives (zero gradients, the buffer
        broadcasts) until every rank is done; gradients are averaged over the
        whole group, so a joined rank counts as a zero gradient, as PyTorch's
        default ``divide_by_initial_world_size=True``. Then the parameters and
        buffers of the last rank to finish are broadcast, so every rank ends
        with the same model. With ``throw_on_early_termination`` every rank
        raises as soon as one runs out of data instead.

        Example (rank r has 3 + r batches)::

            with ddp.join():
                for x, y in loader:
                    opt.zero_grad(); loss_fn(ddp(x), y).backward(); opt.step()
        """
        if not divide_by_initial_world_size:
            raise NotImplementedError("DistributedDataParallel.join: divide_by_initial_world_size=False "
                                      "(averaging over the ranks still training) is not supported")
        if not enable:
            yield
            return
        object.__setattr__(self, "_joining", True)
        object.__setattr__(self, "_throw_on_early_termination", throw_on_early_termination)
        object.__setattr__(self, "_last_alive", None)
        try:
            yield
        except BaseException:
            object.__setattr__(self, "_joining", False)
            raise
        while self._join_round(alive=False):
            self._shadow_iteration()
        object.__setattr__(self, "_joining", False)
        if self._last_alive is not None:
            # Ranks that joined early missed the last steps' updates: take the last joiner's model.
            last = self.process_group.global_ranks[int(np.flatnonzero(self._last_alive)[-1])]
            for t in self.module.state_dict(keep_vars=True).values():
                broadcast(t, src=last, group=self.process_group)

    def _join_round(self, alive: bool) -> bool:
        """Count the ranks still training this iteration; True while there are any."""
        pg = self.process_group
        flags = np.zeros(pg.size(), dtype=np.int64)
        flags[pg.rank()] = alive
        with agreement.context("DDP join round", self._iteration):
            all_reduce(flags, group=pg, algorithm="mpi")
        training = int(flags.sum())
        if training and training < pg.size() and self._throw_on_early_termination:
            joined = [pg.global_ranks[r] for r in np.flatnonzero(flags == 0)]
            raise RuntimeError(f"DistributedDataParallel.join: ranks {joined} ran out of data at "
                               f"iteration {self._iteration} (throw_on_early_termination=True)")
        if training:
            object.__setattr__(self, "_last_alive", flags)
        return training > 0

    def _shadow_iteration(self) -> None:
        """A joined rank's part in one iteration of the others: the same collectives, zero gradients."""
        self._sync_buffers()
        object.__setattr__(self, "_iteration", self._iteration + 1)
        with agreement.context("DDP iteration", self._iteration):
            for b in self._buckets:
                with on_device_of(b.buffer):
                    b.buffer[...] = 0
                all_reduce(b.buffer, op=ReduceOp.AVG, group=self.process_group, algorithm=self.algorithm)
            if self.find_unused_parameters:
                all_reduce(np.zeros(len(self._named), np.uint8), op=ReduceOp.MAX,
                           group=self.process_group, algorithm="mpi")
        if not self._buckets_rebuilt:
            self._rebuild_buckets()  # the others rebuild after their first iteration too

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Skip the all-reduce for backwards of forwards run inside; gradients accumulate.

        The first forward/backward outside the block reduces the accumulated gradients.
        """
        previous = self._require_sync
        object.__setattr__(self, "_require_sync", False)
        try:
            yield
        finally:
            object.__setattr__(self, "_require_sync", previous)
