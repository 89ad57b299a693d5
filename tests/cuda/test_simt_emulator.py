"""The SIMT emulator (pyrt._cuda_emulator) against what CUDA guarantees.

The kernel tests in this folder trust the emulator to behave like the device
where indexing is concerned; these tests check the emulator itself with small
kernels from csrc/cuda/emulator/selftest.cpp: barriers order shared memory,
shuffles and ballots move the right lanes' values, exited threads count as
arrived, a deadlock is an error and not a hang, and bad launches fail like the
driver's.
"""

from __future__ import annotations

import numpy as np
import pytest

emulator = pytest.importorskip("pyrt._cuda_emulator")


@pytest.mark.parametrize(("blocks", "threads"), [(1, 1), (3, 32), (2, 256), (1, 1024)])
def test_barriers_order_a_shared_memory_tree_reduction(blocks: int, threads: int) -> None:
    values = np.random.default_rng(blocks).integers(-50, 50, size=(blocks, threads)).astype(np.float32)
    out = emulator.selftest_block_sum(values)
    np.testing.assert_array_equal(out, np.repeat(values.sum(axis=1, keepdims=True), threads, axis=1))


def test_shuffles_and_ballot_move_the_right_lanes() -> None:
    values = (np.arange(32, dtype=np.int32) * 7 + 3) % 11
    out = emulator.selftest_warp_ops(values)
    np.testing.assert_array_equal(out[:, 0], values.sum())  # __shfl_down_sync tree, then lane 0's
    np.testing.assert_array_equal(out[:, 1], values.sum())  # __shfl_xor_sync butterfly
    np.testing.assert_array_equal(out[:, 2], np.concatenate([values[:1], values[:-1]]))  # __shfl_up_sync
    odd_lanes = sum(1 << lane for lane in range(32) if values[lane] % 2)
    np.testing.assert_array_equal(out[:, 3].astype(np.uint32), np.uint32(odd_lanes))


def test_exited_threads_count_as_arrived() -> None:
    out = emulator.selftest_divergent_barriers(64, False)
    np.testing.assert_array_equal(out, [0] + [1] * 63)


def test_deadlock_is_reported_not_hung() -> None:
    with pytest.raises(RuntimeError, match=r"deadlock in block \(0, 0, 0\): 31 live threads"):
        emulator.selftest_divergent_barriers(32, True)


@pytest.mark.parametrize("threads", [0, 1025])
def test_bad_launch_configuration_fails_like_the_driver(threads: int) -> None:
    with pytest.raises(RuntimeError, match="cudaErrorInvalidConfiguration"):
        emulator.selftest_divergent_barriers(threads, False)


def test_a_failed_launch_does_not_stay_pending() -> None:
    with pytest.raises(RuntimeError, match="cudaErrorInvalidConfiguration"):
        emulator.selftest_divergent_barriers(0, False)
    ones = np.ones((2, 2), np.float32)
    out = np.empty((2, 2), np.float32)
    pointer = lambda x: x.__array_interface__["data"][0]  # noqa: E731
    emulator.sgemm(2, 2, 2, 1.0, pointer(ones), 2, 1, pointer(ones), 2, 1, 0.0, pointer(out), 2, 1, 0)
    np.testing.assert_array_equal(out, 2.0)
