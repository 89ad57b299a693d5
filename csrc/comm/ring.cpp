// Ring all-reduce: reduce-scatter then all-gather over MPI point-to-point.
//
// buffer is (count,) float32 or float64, reduced in place across the p ranks
// of a communicator; on return every rank holds the same bits.
//
// Chunks. The buffer is cut into p chunks whose sizes differ by at most one
// element (the first count % p chunks get the extra one), so any count works:
// 0, 1, fewer than p (some chunks are empty and send nothing), prime.
//
// Schedule. Number the 2(p-1) steps t = 0 .. 2p-3 (the first p-1 are the
// reduce-scatter, the rest the all-gather). At step t rank r
//   sends    chunk (r - t)     mod p to   the right neighbour r+1,
//   receives chunk (r - t - 1) mod p from the left neighbour  r-1,
// and what it receives at step t is exactly what it sends at step t+1. In the
// reduce-scatter the received chunk is added into the local one; after step
// p-2 rank r owns the complete sum of chunk (r + 1) mod p. In the all-gather
// the received chunk overwrites the local one. The same two formulas serve
// both halves, which is why one loop below runs both.
//
// Pipelining. Each chunk is cut into segments of `segment_bytes`, and the
// unit of work is one (step, segment). The receive for the next unit is posted
// before the current unit is reduced, into the other half of a two-segment
// scratch buffer (double buffering), so the add of segment j overlaps the
// transfer of segment j+1; and a segment is forwarded to the right the moment
// it is final, not when its whole chunk is, so step t+1 starts flowing while
// step t is still arriving. All-gather segments are received straight into
// the user buffer: nothing to add, so no copy.
//
// Tags. Unit (t, j) uses tag t * max_segments + j, unique within a call up to
// MPI_TAG_UB (2^31-1 in MPICH; MPI promises only 32767, so the tag wraps
// there). Wrapping is safe because MPI's non-overtaking rule between one pair
// of ranks on one communicator already keeps the units in order; distinct
// tags are there so a schedule bug shows up as a hang or a truncation error
// instead of silently wrong sums.
//
// Communicator. The ring runs on a private MPI_Comm_dup of the caller's
// communicator, created on the first call and cached on it as an MPI
// attribute (freed when the caller frees the communicator). A dup gives the
// ring its own matching space, so no tag choice can collide with user
// traffic, including a user's MPI_ANY_TAG receive, which a reserved tag range
// on the user's communicator could not prevent. The dup also carries
// MPI_ERRORS_RETURN regardless of the caller's handler, so every failure comes
// back here and is reported with the step it happened in.
//
// Build: CMakeLists.txt (module pyrt._comm, linked to the mpich wheel's
// libmpi.so.12). Checked against MPI_Allreduce at 1 to 4 ranks by
//   mpiexec -n 4 python test_ring.py; timed by mpiexec -n 4 python bench_ring.py
#include "comm/ring.h"

#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

namespace pyrt::comm {

namespace {

template <typename T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }

// ---------------------------------------------------------------------------
// The private communicator cached on the caller's one.
struct RingComm {
  MPI_Comm comm = MPI_COMM_NULL;
  int64_t tag_limit = 32768;  // MPI_TAG_UB + 1
  // Receive scratch reused across calls; calls on one communicator are
  // serialized by the collective contract, so one buffer per communicator
  // is enough and the ring never pays for fresh pages in its hot loop.
  std::unique_ptr<unsigned char[]> scratch;
  size_t scratch_bytes = 0;
};

int delete_ring_comm(MPI_Comm /*comm*/, int /*keyval*/, void* attribute, void* /*extra*/) {
  auto* ring = static_cast<RingComm*>(attribute);
  MPI_Comm_free(&ring->comm);
  delete ring;
  return MPI_SUCCESS;
}

std::string mpi_error_string(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string(text, static_cast<size_t>(len));
}

// Outside the ring nothing is in flight yet, so a failure can be an exception.
void check_setup(int rc, const char* call) {
  if (rc != MPI_SUCCESS) {
    throw std::runtime_error(std::string("ring_allreduce: ") + call + " failed: " + mpi_error_string(rc));
  }
}

// Inside the ring a failure leaves peers blocked on receives that will never
// match and requests pointing into our buffers, so the job must end.
void check_ring(int rc, const char* call, MPI_Comm comm, int64_t step, int64_t segment) {
  if (rc == MPI_SUCCESS) return;
  int rank = -1;
  MPI_Comm_rank(comm, &rank);
  const std::string where = step < 0 ? std::string() :
      " at step " + std::to_string(step) + " segment " + std::to_string(segment);
  std::fprintf(stderr, "pyrt ring_allreduce: %s failed on rank %d%s: %s; aborting the job\n", call, rank,
               where.c_str(), mpi_error_string(rc).c_str());
  std::fflush(stderr);
  MPI_Abort(comm, rc);
}

RingComm& ring_comm_of(MPI_Comm user) {
  static std::once_flag keyval_once;
  static int keyval = MPI_KEYVAL_INVALID;
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    throw std::runtime_error(
        "ring_allreduce: MPI is not initialized (import mpi4py.MPI before pyrt._comm) or already finalized");
  }
  if (user == MPI_COMM_NULL) throw std::invalid_argument("ring_allreduce: the communicator is MPI_COMM_NULL");
  int inter = 0;
  check_setup(MPI_Comm_test_inter(user, &inter), "MPI_Comm_test_inter");
  if (inter) throw std::invalid_argument("ring_allreduce: an inter-communicator has no ring; pass an intra-communicator");

  std::call_once(keyval_once, [] {
    check_setup(MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, delete_ring_comm, &keyval, nullptr),
                "MPI_Comm_create_keyval");
  });
  void* value = nullptr;
  int found = 0;
  check_setup(MPI_Comm_get_attr(user, keyval, &value, &found), "MPI_Comm_get_attr");
  if (found) return *static_cast<RingComm*>(value);

  auto ring = std::make_unique<RingComm>();
  check_setup(MPI_Comm_dup(user, &ring->comm), "MPI_Comm_dup");
  check_setup(MPI_Comm_set_errhandler(ring->comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  int* tag_ub = nullptr;
  check_setup(MPI_Comm_get_attr(ring->comm, MPI_TAG_UB, &tag_ub, &found), "MPI_Comm_get_attr(MPI_TAG_UB)");
  if (found && tag_ub != nullptr) ring->tag_limit = static_cast<int64_t>(*tag_ub) + 1;
  check_setup(MPI_Comm_set_attr(user, keyval, ring.get()), "MPI_Comm_set_attr");
  return *ring.release();
}

// The p chunks of a count-element buffer: the first `rem` hold base+1 elements.
struct Chunks {
  int64_t base, rem;
  int64_t offset(int64_t i) const { return i * base + std::min(i, rem); }
  int64_t size(int64_t i) const { return base + (i < rem ? 1 : 0); }
};

// Waits poll MPI_Test and yield the core between polls. MPICH's MPI_Wait spins,
// which on an oversubscribed node (more ranks than cores, or DDP's
// communication thread beside a rank's backward) takes the core away from the
// very thread that must run before the message can arrive. With nothing else
// runnable, sched_yield returns at once and the loop is a plain spin. (Sleeping
// after a short spin, as pyrt's Python waits do, was measured here: DDP on the
// 784-1024-512-10 MLP at 2 ranks went from 5.5 to 8.5-9 ms of all-reduce per
// step, since every ring step's segment then waits out a sleep.)
int wait_yielding(MPI_Request* request) {
  for (;;) {
    int done = 0;
    const int rc = MPI_Test(request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS || done) return rc;
    sched_yield();
  }
}

int waitall_yielding(std::vector<MPI_Request>& requests) {
  for (;;) {
    int done = 0;
    const int rc = MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done,
                               MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS || done) return rc;
    sched_yield();
  }
}

template <typename T>
void ring_allreduce_typed(RingComm& ring, T* buf, int64_t count, Op op, int64_t segment_bytes) {
  MPI_Comm comm = ring.comm;
  int rank_i = 0, size_i = 1;
  MPI_Comm_rank(comm, &rank_i);
  MPI_Comm_size(comm, &size_i);
  const int64_t p = size_i, r = rank_i;
  if (p == 1 || count == 0) return;  // Avg over one rank divides by 1

  const Chunks chunks{count / p, count % p};
  const int64_t seg = std::max<int64_t>(1, segment_bytes / static_cast<int64_t>(sizeof(T)));
  const int64_t chunk_max = chunks.size(0);
  const int64_t max_segments = (chunk_max + seg - 1) / seg;
  const int64_t slot = std::min(seg, chunk_max);  // elements per scratch half
  const int64_t steps = 2 * (p - 1);
  const int right = static_cast<int>((r + 1) % p), left = static_cast<int>((r + p - 1) % p);
  const MPI_Datatype type = mpi_type<T>();

  const size_t scratch_bytes = 2 * static_cast<size_t>(slot) * sizeof(T);
  if (ring.scratch_bytes < scratch_bytes) {
    ring.scratch.reset(new unsigned char[scratch_bytes]);
    ring.scratch_bytes = scratch_bytes;
  }
  T* scratch = reinterpret_cast<T*>(ring.scratch.get());

  auto mod_p = [p](int64_t x) { return ((x % p) + p) % p; };
  auto segments_of = [&](int64_t chunk) { return (chunks.size(chunk) + seg - 1) / seg; };
  auto tag_of = [&](int64_t t, int64_t j) { return static_cast<int>((t * max_segments + j) % ring.tag_limit); };
  // Segment j of chunk c as (pointer, length).
  auto segment = [&](int64_t c, int64_t j) {
    const int64_t begin = j * seg;
    return std::pair<T*, int>(buf + chunks.offset(c) + begin,
                              static_cast<int>(std::min(seg, chunks.size(c) - begin)));
  };

  // One request per (step, segment) sent; a send is waited on before its
  // chunk is overwritten by the all-gather (see post_recv) and at the end.
  std::vector<MPI_Request> sends(static_cast<size_t>(steps * max_segments), MPI_REQUEST_NULL);
  auto post_send = [&](int64_t t, int64_t c, int64_t j) {
    auto [ptr, len] = segment(c, j);
    check_ring(MPI_Isend(ptr, len, type, right, tag_of(t, j), comm, &sends[t * max_segments + j]),
               "MPI_Isend", comm, t, j);
  };

  // Units (t, j) in the order every rank processes them; steps whose chunk is
  // empty (count < p) have no units.
  struct Unit {
    int64_t t, j;
  };
  auto first_at = [&](int64_t t) {
    while (t < steps && segments_of(mod_p(r - t - 1)) == 0) ++t;
    return Unit{t, 0};
  };
  auto next = [&](Unit u) {
    return u.j + 1 < segments_of(mod_p(r - u.t - 1)) ? Unit{u.t, u.j + 1} : first_at(u.t + 1);
  };

  MPI_Request recvs[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  auto post_recv = [&](Unit u, int half) {
    const int64_t c = mod_p(r - u.t - 1);
    auto [ptr, len] = segment(c, u.j);
    T* dst = ptr;
    if (u.t < p - 1) {
      dst = scratch + half * slot;
    } else {
      // All-gather writes chunk c in place; this rank sent the same chunk at
      // step t+1-p, and MPI forbids touching a buffer with a send in flight.
      check_ring(wait_yielding(&sends[(u.t + 1 - p) * max_segments + u.j]), "MPI_Wait", comm, u.t,
                 u.j);
    }
    check_ring(MPI_Irecv(dst, len, type, left, tag_of(u.t, u.j), comm, &recvs[half]), "MPI_Irecv", comm,
               u.t, u.j);
  };

  for (int64_t j = 0; j < segments_of(r); ++j) post_send(0, r, j);

  int half = 0;
  Unit u = first_at(0);
  if (u.t < steps) post_recv(u, half);
  while (u.t < steps) {
    const Unit after = next(u);
    if (after.t < steps) post_recv(after, half ^ 1);
    check_ring(wait_yielding(&recvs[half]), "MPI_Wait", comm, u.t, u.j);
    const int64_t c = mod_p(r - u.t - 1);
    auto [ptr, len] = segment(c, u.j);
    if (u.t < p - 1) {
      combine(ptr, scratch + half * slot, len, op);
      if (op == Op::Avg && u.t == p - 2) divide(ptr, len, p);
    }
    if (u.t + 1 < steps) post_send(u.t + 1, c, u.j);
    u = after;
    half ^= 1;
  }
  check_ring(waitall_yielding(sends), "MPI_Waitall", comm, steps, 0);
}


}  // namespace


void ring_allreduce(MPI_Comm comm, void* buffer, int64_t count, Dtype dtype, Op op, int64_t segment_bytes) {
  if (count < 0) throw std::invalid_argument("ring_allreduce: count must be >= 0, got " + std::to_string(count));
  if (segment_bytes <= 0 || segment_bytes > (int64_t{1} << 30)) {
    throw std::invalid_argument("ring_allreduce: segment_bytes must be in [1, 2**30], got " +
                                std::to_string(segment_bytes));
  }
  if (buffer == nullptr && count > 0) throw std::invalid_argument("ring_allreduce: buffer is null");
  if (dtype != Dtype::Float32 && dtype != Dtype::Float64) {
    throw std::invalid_argument("ring_allreduce: the ring reduces float32 and float64 only");
  }
  if (op == Op::Product) throw std::invalid_argument("ring_allreduce: the ring reduces by sum, avg, max or min");
  RingComm& ring = ring_comm_of(comm);
  switch (dtype) {
    case Dtype::Float32:
      ring_allreduce_typed(ring, static_cast<float*>(buffer), count, op, segment_bytes);
      break;
    case Dtype::Float64:
      ring_allreduce_typed(ring, static_cast<double*>(buffer), count, op, segment_bytes);
      break;
    default:
      break;  // refused above
  }
}


}  // namespace pyrt::comm
