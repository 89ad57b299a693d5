"""``pyrt._comm``, the C++ collectives (the ring and the shared-memory paths), loaded safely.

The module links the MPI library it was built against; mpi4py loads its own.
Two different MPIs in one process would crash on the first call, so the
module is checked to report the same library as mpi4py before any use.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["comm_available", "comm_module"]


@functools.cache
def comm_module() -> Any:
    """``pyrt._comm``, loaded after mpi4py's MPI and checked to be the same library.

    Raises RuntimeError saying how to fix a missing or mismatched build.
    """
    from mpi4py import MPI

    try:
        from pyrt import _comm
    except ImportError as exc:
        raise RuntimeError(
            "this collective needs pyrt._comm, which was not built or cannot find "
            f"its MPI library ({exc}). Install the mpich wheel (`pip install mpich`) and reinstall "
            "pyrt, or use algorithm='mpi'"
        ) from exc
    if _comm.mpi_library_version() != MPI.Get_library_version():
        raise RuntimeError(
            "pyrt._comm was built against a different MPI than mpi4py loaded:\n"
            f"  pyrt._comm: {_comm.mpi_library_version().splitlines()[0]}\n"
            f"  mpi4py:     {MPI.Get_library_version().splitlines()[0]}\n"
            "Reinstall pyrt in this environment so both use one MPI"
        )
    return _comm


def comm_available() -> bool:
    """Whether ``comm_module()`` loads (without raising)."""
    try:
        comm_module()
    except RuntimeError:
        return False
    return True
