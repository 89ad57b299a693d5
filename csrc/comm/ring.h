// Ring all-reduce over MPI point-to-point: the schedule pyrt uses for gradient
// buckets when `algorithm="ring"`. See ring.cpp for the schedule and tag scheme.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>

#include "comm/elementwise.h"

namespace pyrt::comm {

// The ring reduces Float32/Float64 by Sum, Avg, Max and Min (Dtype, Op: elementwise.h).
// Its Avg divides by the group size on the rank that owns each chunk, between the
// two halves of the ring, so it costs 1/p of a full pass over the buffer and
// every rank ends with bit-identical values.

// 512 KiB: the fastest or within noise of it from 1 MiB to 64 MiB buffers on 2
// and 4 ranks (bench_ring.py, segments 64 KiB .. 4 MiB). Smaller segments pay
// per-message overhead in MPICH's shared-memory path; larger ones leave too
// few segments per chunk for the add of one to overlap the copy of the next.
constexpr int64_t kDefaultSegmentBytes = 512 * 1024;

// In-place all-reduce of `count` elements of `dtype` at `buffer` across the
// ranks of `comm`. Collective: every rank must call it with the same count,
// dtype and op (pyrt.distributed checks that before calling, with every other
// collective's arguments: agreement.py). `segment_bytes` is
// the pipelining unit (> 0, at most 1 GiB); it need not agree across ranks'
// chunk sizes but must be the same on every rank.
//
// Concurrency: like any MPI collective, calls on one communicator must be
// issued in the same order on every rank and never from two threads at once;
// calls on different communicators may run concurrently (MPI_THREAD_MULTIPLE).
//
// Errors: an invalid argument throws std::invalid_argument before any message
// is sent. A failing MPI call inside the ring prints the call, rank and step
// to stderr and calls MPI_Abort: peers are blocked in receives that will never
// match, so returning an error would leave them hanging.
void ring_allreduce(MPI_Comm comm, void* buffer, int64_t count, Dtype dtype, Op op,
                    int64_t segment_bytes = kDefaultSegmentBytes);

}  // namespace pyrt::comm
