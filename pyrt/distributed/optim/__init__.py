"""``pyrt.distributed.optim``: optimizers that know about process groups (PyTorch's home of ZeRO)."""

from pyrt.distributed.optim.zero import ZeroRedundancyOptimizer, optimizer_state_bytes

__all__ = ["ZeroRedundancyOptimizer", "optimizer_state_bytes"]
