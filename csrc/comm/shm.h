// All-reduce and call agreement through node shared memory, for the ranks of a
// group that share one machine. See shm.cpp for the schedule.
//
// The memory is MPI's (an MPI-3 shared window, `Win.Allocate_shared` on a
// `COMM_TYPE_SHARED` communicator, made in pyrt/distributed/shm.py): this
// code only sees each rank's segment as mapped in this process and needs no
// MPI calls, so a collective costs two flag barriers and the copies.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "comm/elementwise.h"

namespace pyrt::comm {


// A rank's segment:
//   [0, 64)                 its barrier counter (int64; only its owner writes it)
//   [64, 64 + 2 * 256)      two agreement records, used by barrier parity
//   [kControlBytes, ...)    two staging slots of slot_bytes each
constexpr int64_t kRecordBytes = 256;
constexpr int64_t kMaxRecordWords = kRecordBytes / 8;
constexpr int64_t kControlBytes = 64 + 2 * kRecordBytes;

// Called with the barrier number when a barrier is not passed within the spin
// and sleeping budgets (see wait() in shm.cpp); returns once `reached(barrier)`
// (pyrt's watchdog waits there, and ends the job if a rank never arrives).
// Called without the GIL held.
using SlowWait = std::function<void(int64_t barrier)>;
// Drives MPI's progress engine once (an Iprobe on a communicator nobody sends
// on); called between polls of a sleeping wait, without the GIL.
using Progress = std::function<void()>;

class SharedMemoryComm {
 public:
  // segments[q]: rank q's segment (kControlBytes + 2 * slot_bytes bytes, 64-byte
  // aligned, counters zeroed before any rank calls in); this is rank `rank`.
  // Every record this object carries is record_words int64 long (fixed, so that
  // ranks cannot compare different prefixes and reach different answers).
  SharedMemoryComm(int rank, std::vector<char*> segments, int64_t slot_bytes, double spin_seconds,
                   int64_t record_words, double sleep_seconds, Progress progress);

  int rank() const { return rank_; }
  int size() const { return static_cast<int>(segments_.size()); }
  int64_t barriers() const { return barriers_; }
  // Whether every rank has passed its `barrier`-th barrier's arrival.
  bool reached(int64_t barrier) const;
  // Rank q's record (`words` int64) of the most recent barrier.
  const int64_t* record(int q) const;

  // A barrier carrying this rank's record (record_words int64); true when every
  // rank published the same record. Every rank gets the same answer.
  //
  // One thread at a time: the collectives of one group are issued in one order
  // on every rank, so a second thread inside would desynchronise the barrier
  // counts; a call that finds another one running throws std::logic_error.
  bool agree(const int64_t* record, int64_t words, const SlowWait& slow);

  // In-place all-reduce of `count` elements at `data`, staged through the slots.
  // Starts with agree(record): when that fails, returns false with `data` untouched.
  bool all_reduce(void* data, int64_t count, Dtype dtype, Op op, const int64_t* record, int64_t words,
                  const SlowWait& slow);

  // The same, zero-copy: buffers[q] is rank q's copy of the array (in memory
  // every rank maps, e.g. another shared window), reduced in every rank's copy.
  bool all_reduce_symmetric(const std::vector<char*>& buffers, int64_t count, Dtype dtype, Op op,
                            const int64_t* record, int64_t words, const SlowWait& slow);

 private:
  class Exclusive;  // the one-thread-at-a-time check
  void check_record(int64_t words) const;
  void arrive(const int64_t* record, int64_t words);
  void wait(const SlowWait& slow) const;
  bool records_agree(int64_t words) const;
  char* slot(int q, int which) const;

  int rank_;
  std::vector<char*> segments_;
  int64_t slot_bytes_;
  double spin_seconds_;
  double sleep_seconds_;  // the sleeping wait after the spin, before SlowWait (wait() in shm.cpp)
  int64_t record_words_;
  Progress progress_;
  int64_t barriers_ = 0;
  int buffer_ = 0;  // the slot the next staged chunk uses
  std::atomic<bool> busy_{false};
};

}  // namespace pyrt::comm
