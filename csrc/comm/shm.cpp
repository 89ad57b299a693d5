// All-reduce through node shared memory: every rank maps every other rank's
// segment, so reducing costs plain loads and stores instead of messages.
//
// Barrier. Each rank owns one counter; arriving at barrier b stores b into it
// (release) and waiting loads every rank's counter (acquire) until all are at
// least b. No read-modify-write atomics: each counter has one writer. Every
// store this rank made before arriving is visible to a rank that saw the
// counter, which is the only ordering the schedules below need. A waiter
// spins briefly (pause, then sched_yield: with more ranks than cores, the
// rank being waited for needs this core), then sleeps between polls for up to
// SLEEP_SECONDS (pyrt/distributed/shm.py) without the GIL (wait()), and only
// then hands the wait to the caller's SlowWait, where pyrt's watchdog ends the
// job if a rank never arrives.
//
// Agreement. A barrier may carry a record (pyrt/distributed/agreement.py:
// the group's sequence number, the collective's kind, op, dtype, shape...)
// that every rank compares with its own after passing: the check that ranks
// are making the same call costs no message of its own. Records alternate
// between two areas by barrier parity: a rank writes barrier b's record only
// after passing barrier b-1, by which time every rank has read barrier b-2's.
//
// Staged all-reduce, per chunk of at most one slot:
//   1. copy the chunk into my slot;                        barrier (+ record)
//   2. reduce slice r of the chunk across every slot into my slot, in rank
//      order (one rank reduces each element, so every rank gets the same
//      bits); divide for an average;                             barrier
//   3. copy every rank's slice from its slot into my buffer.
// Chunks alternate between two slots per rank: chunk k+1 is written while a
// slow rank may still read chunk k, and cannot overwrite chunk k-1 before its
// barrier 1, which waits for every rank to have finished chunk k-1's step 3.
//
// Symmetric (zero-copy) all-reduce, when every rank's array lives in memory
// the others map: barrier (+ record); rank r reduces slice r of the array
// across all copies and writes the result into every copy; barrier. Each
// element is read p times and written p times in all, by one rank.
#include "comm/shm.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PYRT_CPU_RELAX() _mm_pause()
#else
#define PYRT_CPU_RELAX() ((void)0)
#endif

#include "comm/elementwise.h"

namespace pyrt::comm {

namespace {

using Counter = std::atomic<int64_t>;
static_assert(Counter::is_always_lock_free, "the barrier counters must be lock-free to work across processes");

// A slice is reduced in blocks of this many bytes: combined in a buffer on the
// stack, then copied out, so each block stays in L1 between the passes.
constexpr int64_t kBlockBytes = 16 * 1024;

// [lo, hi) of `count` elements owned by rank q of p: the first count % p ranks get one extra.
std::pair<int64_t, int64_t> bounds(int64_t count, int q, int p) {
  const int64_t base = count / p, extra = count % p;
  const int64_t lo = q * base + std::min<int64_t>(q, extra);
  return {lo, lo + base + (q < extra ? 1 : 0)};
}

// Reduce elements [lo, hi) across every rank's copy (`sources`, by rank) and
// write the result to each of `outputs`. The order is rank 0, 1, ..., p-1
// whichever rank runs it and wherever the element falls in a chunk, so a sum's
// bits depend only on the ranks' values: a DDP run that rebuilds its buckets
// differently (a resumed run) reduces every gradient exactly as before.
template <typename T>
void reduce_slice(const std::vector<char*>& sources, int64_t lo, int64_t hi, Op op,
                  const std::vector<char*>& outputs) {
  const int p = static_cast<int>(sources.size());
  constexpr int64_t kBlock = kBlockBytes / static_cast<int64_t>(sizeof(T));
  alignas(64) T acc[kBlock];
  for (int64_t begin = lo; begin < hi; begin += kBlock) {
    const int64_t n = std::min(kBlock, hi - begin);
    std::memcpy(acc, reinterpret_cast<const T*>(sources[0]) + begin, n * sizeof(T));
    for (int q = 1; q < p; ++q) combine(acc, reinterpret_cast<const T*>(sources[q]) + begin, n, op);
    if (op == Op::Avg && p > 1) divide(acc, n, p);
    for (char* out : outputs) std::memcpy(reinterpret_cast<T*>(out) + begin, acc, n * sizeof(T));
  }
}

}  // namespace

SharedMemoryComm::SharedMemoryComm(int rank, std::vector<char*> segments, int64_t slot_bytes,
                                   double spin_seconds, int64_t record_words, double sleep_seconds,
                                   Progress progress)
    : rank_(rank),
      segments_(std::move(segments)),
      slot_bytes_(slot_bytes),
      spin_seconds_(spin_seconds),
      record_words_(record_words),
      sleep_seconds_(sleep_seconds),
      progress_(std::move(progress)) {
  if (record_words < 1 || record_words > kMaxRecordWords) {
    throw std::invalid_argument("SharedMemoryComm: record_words must be in [1, " +
                                std::to_string(kMaxRecordWords) + "], got " + std::to_string(record_words));
  }
  if (segments_.empty() || rank < 0 || rank >= static_cast<int>(segments_.size())) {
    throw std::invalid_argument("SharedMemoryComm: rank " + std::to_string(rank) + " outside a group of " +
                                std::to_string(segments_.size()));
  }
  if (slot_bytes <= 0 || slot_bytes % 64 != 0) {
    throw std::invalid_argument("SharedMemoryComm: slot_bytes must be a positive multiple of 64, got " +
                                std::to_string(slot_bytes));
  }
  for (char* segment : segments_) {
    if (segment == nullptr || reinterpret_cast<uintptr_t>(segment) % 64 != 0) {
      throw std::invalid_argument("SharedMemoryComm: every segment must be non-null and 64-byte aligned");
    }
  }
}

class SharedMemoryComm::Exclusive {
 public:
  explicit Exclusive(std::atomic<bool>& busy) : busy_(busy) {
    if (busy_.exchange(true)) {
      throw std::logic_error("SharedMemoryComm: called from two threads at once; a group's collectives "
                             "must be issued from one thread at a time");
    }
  }
  ~Exclusive() { busy_.store(false); }
  Exclusive(const Exclusive&) = delete;
  Exclusive& operator=(const Exclusive&) = delete;

 private:
  std::atomic<bool>& busy_;
};

void SharedMemoryComm::check_record(int64_t words) const {
  if (words != record_words_) {
    throw std::invalid_argument("SharedMemoryComm: a record is " + std::to_string(record_words_) +
                                " int64 here, got " + std::to_string(words));
  }
}

char* SharedMemoryComm::slot(int q, int which) const {
  return segments_[q] + kControlBytes + which * slot_bytes_;
}

const int64_t* SharedMemoryComm::record(int q) const {
  return reinterpret_cast<const int64_t*>(segments_[q] + 64 + (barriers_ % 2) * kRecordBytes);
}

bool SharedMemoryComm::reached(int64_t barrier) const {
  for (char* segment : segments_) {
    if (reinterpret_cast<const Counter*>(segment)->load(std::memory_order_acquire) < barrier) return false;
  }
  return true;
}

void SharedMemoryComm::arrive(const int64_t* record, int64_t words) {
  ++barriers_;
  if (record != nullptr) {
    std::memcpy(segments_[rank_] + 64 + (barriers_ % 2) * kRecordBytes, record, words * sizeof(int64_t));
  }
  reinterpret_cast<Counter*>(segments_[rank_])->store(barriers_, std::memory_order_release);
}

// A waiter spins (pause, then sched_yield) for spin_seconds_, then sleeps
// between polls here until sleep_seconds_ have passed, and only then hands the
// wait to the caller's SlowWait (the watchdog: timeouts, ranks that left). The
// watchdog polls in Python, so a barrier passed while it waits is only noticed
// once its thread gets the GIL, which a main thread running Python (autograd
// between kernels) holds for up to the 5 ms switch interval. Measured (2
// ranks, rank 0's communication thread waiting in an async all-reduce while
// its main thread runs Python, rank 1 arriving 10 ms late): rank 1's
// all-reduce took 0.73-0.80 ms (median) with the wait handed over after the
// spin, 0.30-0.31 ms with this sleeping wait. Each sleeping poll also drives
// MPI's progress (progress_): a peer still finishing an MPI transfer (the
// ring's last large messages) needs this rank's MPI to answer, and a rank
// waiting here makes no MPI call otherwise (4 ranks deadlocked without it).
constexpr auto kSleep = std::chrono::microseconds(50);

void SharedMemoryComm::wait(const SlowWait& slow) const {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (int64_t polls = 0; !reached(barriers_); ++polls) {
    if (polls < 256) {
      PYRT_CPU_RELAX();
      continue;
    }
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (waited <= spin_seconds_) {
      sched_yield();
    } else if (waited <= sleep_seconds_ && progress_) {
      progress_();
      std::this_thread::sleep_for(kSleep);
    } else {
      slow(barriers_);
      return;
    }
  }
}

bool SharedMemoryComm::records_agree(int64_t words) const {
  const int64_t* mine = record(rank_);
  for (int q = 0; q < size(); ++q) {
    if (std::memcmp(record(q), mine, words * sizeof(int64_t)) != 0) return false;
  }
  return true;
}

bool SharedMemoryComm::agree(const int64_t* record, int64_t words, const SlowWait& slow) {
  Exclusive only(busy_);
  check_record(words);
  arrive(record, words);
  wait(slow);
  return records_agree(words);
}

bool SharedMemoryComm::all_reduce(void* data, int64_t count, Dtype dtype, Op op, const int64_t* record,
                                  int64_t words, const SlowWait& slow) {
  if (count < 0) throw std::invalid_argument("shared-memory all-reduce: negative count");
  if (count == 0) return agree(record, words, slow);
  Exclusive only(busy_);
  check_record(words);
  const int64_t itemsize = dtype_size(dtype);
  const int64_t per_chunk = slot_bytes_ / itemsize;
  char* bytes = static_cast<char*>(data);
  bool agreed = true;
  with_type(dtype, [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    for (int64_t start = 0; start < count; start += per_chunk) {
      const int64_t n = std::min(per_chunk, count - start);
      char* chunk = bytes + start * itemsize;
      std::vector<char*> slots(segments_.size());
      for (int q = 0; q < size(); ++q) slots[q] = slot(q, buffer_);
      std::memcpy(slots[rank_], chunk, n * itemsize);
      const bool first = start == 0;
      arrive(first ? record : nullptr, first ? words : 0);
      wait(slow);
      if (first && !records_agree(words)) {
        agreed = false;
        return;  // nothing written to `data` yet
      }
      const auto [lo, hi] = bounds(n, rank_, size());
      reduce_slice<T>(slots, lo, hi, op, {slots[rank_]});
      arrive(nullptr, 0);
      wait(slow);
      for (int q = 0; q < size(); ++q) {
        const auto [qlo, qhi] = bounds(n, q, size());
        std::memcpy(chunk + qlo * itemsize, slots[q] + qlo * itemsize, (qhi - qlo) * itemsize);
      }
      buffer_ ^= 1;  // only for chunks every rank reduced: a refused call leaves the ranks in step
    }
  });
  return agreed;
}

bool SharedMemoryComm::all_reduce_symmetric(const std::vector<char*>& buffers, int64_t count, Dtype dtype,
                                            Op op, const int64_t* record, int64_t words,
                                            const SlowWait& slow) {
  if (count < 0) throw std::invalid_argument("shared-memory all-reduce: negative count");
  if (static_cast<int>(buffers.size()) != size()) {
    throw std::invalid_argument("shared-memory all-reduce: " + std::to_string(buffers.size()) +
                                " buffers for a group of " + std::to_string(size()));
  }
  if (!agree(record, words, slow)) return false;  // also: every rank's data is in place
  if (count == 0 || size() == 1) return true;  // an average over one rank is its sum
  Exclusive only(busy_);
  with_type(dtype, [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    const auto [lo, hi] = bounds(count, rank_, size());
    reduce_slice<T>(buffers, lo, hi, op, buffers);
  });
  arrive(nullptr, 0);  // every copy complete before any rank reads or rewrites its array
  wait(slow);
  return true;
}

}  // namespace pyrt::comm
