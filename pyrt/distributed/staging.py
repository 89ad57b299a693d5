"""GPU arrays in the collectives: staged through pinned host memory around each MPI call.

An MPI that is not CUDA-aware (the ``mpich`` wheel's is not) reads and writes
host memory only. A collective on a cupy array therefore runs on a host copy:
the current stream is synchronised first (the kernels that wrote the array must
have finished before MPI reads it), the array is copied into a page-locked
(pinned) host buffer, the ordinary numpy collective runs on that buffer, and
the result is copied back into the GPU array, for an asynchronous collective
when it is waited for, on the thread that waits. Pinned memory makes both
copies DMA transfers, and cupy's pinned pool reuses the buffers across steps.

When the MPI library can read GPU memory (``cuda_aware_mpi()``: mpi4py's
``MPI.Query_cuda_support()``), ``all_reduce(algorithm="mpi")`` and ``broadcast``
hand it the device buffer itself (mpi4py passes the pointer from
``__cuda_array_interface__``): no host copies. The current stream is still
synchronised first, since MPI does not order itself after our kernels. The
ring and shared-memory algorithms are host code and always stage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pyrt.backend import is_cuda_array
from pyrt.distributed.averaging import divide_by_group_size
from pyrt.distributed.work import Work
from pyrt.tensor import Tensor

__all__ = ["all_reduce_on_device", "broadcast_on_device", "cuda_aware_mpi", "device_array", "direct",
           "synchronize", "through_host"]


def device_array(x: Any) -> Any | None:
    """``x``'s array when it is a GPU (cupy) array, else None.

    >>> device_array(np.zeros(2)) is None
    True
    """
    array = x.data if isinstance(x, Tensor) else x
    return array if is_cuda_array(array) else None


def cuda_aware_mpi() -> bool:
    """True when the MPI library says it can read GPU memory (``MPI.Query_cuda_support()``,
    MPI 4.1 / MPICH and Open MPI extensions); False when it cannot or cannot tell.

    Example (it initialises MPI, so not run as a doctest)::

        staging.cuda_aware_mpi()   # False with the mpich wheel: GPU buffers are staged
    """
    from mpi4py import MPI

    query = getattr(MPI, "Query_cuda_support", None)
    if query is None:
        return False
    try:
        return bool(query())
    except Exception:  # an MPI without the extension raises NotImplementedError
        return False


def to_host(array: Any) -> np.ndarray:
    """A pinned host copy of GPU ``array``, taken after the current stream's work is done."""
    import cupy

    with array.device:
        cupy.cuda.get_current_stream().synchronize()
        memory = cupy.cuda.alloc_pinned_memory(max(array.nbytes, 1))
        host = np.frombuffer(memory, array.dtype, array.size).reshape(array.shape)
        cupy.ascontiguousarray(array).get(out=host)
    return host


def from_host(host: np.ndarray, array: Any) -> None:
    """Copy ``host`` back into GPU ``array``, in place (views of it see the new values)."""
    import cupy

    with array.device:
        if array.flags.c_contiguous:
            array.set(host)  # one host -> device copy (DDP's buckets are contiguous)
        else:
            array[...] = cupy.asarray(host)  # cupy's basic-index assignment refuses host arrays
        # The copies above are queued on the stream and read the pinned buffer, which goes back
        # to cupy's pool (with no event) as soon as it is dropped: wait before it can be reused.
        cupy.cuda.get_current_stream().synchronize()


class _CopyBack(Work):
    """An asynchronous collective on a host copy: finishing it copies the result to the GPU."""

    def __init__(self, inner: Work, copy_back: Callable[[], None]) -> None:
        super().__init__()
        self._inner = inner
        self._copy_back = copy_back

    def _done(self) -> None:
        self._copy_back()
        self._finished = True
        self._result = self._inner._result

    def wait(self, timeout: float | None = None) -> bool:
        if not self._finished:
            self._inner.wait(timeout)
            self._done()
        return True

    def is_completed(self) -> bool:
        if not self._finished and self._inner.is_completed():
            self._done()
        return self._finished

    @property
    def seconds(self) -> float | None:
        return self._inner.seconds


def through_host(array: Any, run: Callable[[np.ndarray], Work | None], async_op: bool,
                 copy_back: bool = True) -> Work | None:
    """Run collective ``run`` on a pinned host copy of GPU ``array``; copy the result back into
    ``array`` (unless ``copy_back`` is False: an input the collective only reads)."""
    host = to_host(array)
    work = run(host)

    def back() -> None:
        if copy_back:
            from_host(host, array)

    if work is None:
        back()
        return None
    return _CopyBack(work, back)


# --- CUDA-aware MPI: device pointers straight to MPI ----------------------------------------------

def direct(array: Any) -> bool:
    """Whether MPI can take GPU ``array`` itself: a CUDA-aware MPI and a contiguous array."""
    return array.flags.c_contiguous and cuda_aware_mpi()


def synchronize(array: Any) -> None:
    """Wait for the current stream of ``array``'s GPU: what wrote ``array`` has finished."""
    import cupy

    with array.device:
        cupy.cuda.get_current_stream().synchronize()


def all_reduce_on_device(comm: Any, array: Any, mpi_op: Any, average: bool) -> None:
    """``MPI_Allreduce`` in place on a GPU array (CUDA-aware MPI); ``average`` divides by the size."""
    from mpi4py import MPI

    with array.device:
        comm.Allreduce(MPI.IN_PLACE, array, op=mpi_op)
        if average:
            divide_by_group_size(array, comm.Get_size())  # AVG's one rule, on the GPU
        synchronize(array)  # the caller may read it as soon as this returns


def broadcast_on_device(comm: Any, array: Any, root: int) -> None:
    """``MPI_Bcast`` of a GPU array (CUDA-aware MPI)."""
    with array.device:
        comm.Bcast(array, root=root)
