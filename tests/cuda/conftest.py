"""Where the CUDA kernel tests run: the SIMT emulator always, a GPU when there is one.

``kernel_device`` hands a test one ``KernelDevice``: the kernel module
(``pyrt._cuda_emulator`` or ``pyrt._cuda``), its array library (numpy for the
emulator, whose "device pointers" are host addresses; cupy on a GPU) and the
few conversions a test needs. A kernel test is written once against it, so the
same assertions check the kernel's index math on any machine and its real
behaviour where a GPU is visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pytest


@dataclass(frozen=True)
class KernelDevice:
    name: str
    kernels: ModuleType  # pyrt._cuda or pyrt._cuda_emulator: the same functions
    xp: ModuleType       # numpy (emulator) or cupy (GPU)

    def asarray(self, host: np.ndarray) -> Any:
        """A device copy of a host array (the emulator's device is host memory)."""
        return self.xp.array(host)

    def asnumpy(self, x: Any) -> np.ndarray:
        return x if self.xp is np else self.xp.asnumpy(x)

    @staticmethod
    def ptr(x: Any) -> int:
        """Address of x's first element, what the kernels take as a device pointer."""
        if isinstance(x, np.ndarray):
            return int(x.__array_interface__["data"][0])
        return int(x.data.ptr)

    def stream_ptr(self) -> int:
        return 0 if self.xp is np else int(self.xp.cuda.get_current_stream().ptr)

    def synchronize(self) -> None:
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()


def _gpu_device() -> KernelDevice | None:
    try:
        import cupy

        from pyrt import _cuda
    except ImportError:
        return None
    if _cuda.device_count() == 0:
        return None
    return KernelDevice("gpu", _cuda, cupy)


@pytest.fixture(params=["emulator", "gpu"])
def kernel_device(request: pytest.FixtureRequest) -> KernelDevice:
    if request.param == "emulator":
        from pyrt import _cuda_emulator

        return KernelDevice("emulator", _cuda_emulator, np)
    device = _gpu_device()
    if device is None:
        pytest.skip("needs pyrt._cuda, cupy and a CUDA GPU (the emulator run checks the same assertions)")
    return device
