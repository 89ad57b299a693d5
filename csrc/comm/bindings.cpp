// pyrt._comm: the MPI-linked ring all-reduce, bound for Python.
//
// This file only checks arguments and releases the GIL; the schedule lives in
// csrc/comm/ring.cpp. A communicator crosses from mpi4py as the integer
// `comm.py2f()` and comes back with MPI_Comm_f2c: portable across MPI
// implementations, unlike reaching into mpi4py's object layout.
//
// Import order: import mpi4py.MPI first. It loads libmpi.so.12 (the `mpich`
// wheel's, from <prefix>/lib); this module needs that same library, which it
// then finds already loaded by SONAME. Its RUNPATH ($ORIGIN/../../..,
// i.e. <prefix>/lib from <prefix>/lib/pythonX.Y/site-packages/pyrt) finds the
// wheel's library on its own too, but only mpi4py knows which MPI it chose,
// so pyrt.distributed checks mpi_library_version() against
// MPI.Get_library_version() before the first call.
#include <mpi.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>
#include <stdexcept>
#include <string>

#include "comm/ring.h"
#include "comm/shm.h"

namespace py = pybind11;
using pyrt::comm::Dtype;
using pyrt::comm::Op;
using pyrt::comm::SharedMemoryComm;

namespace {

MPI_Comm comm_from_fortran(int64_t fcomm) { return MPI_Comm_f2c(static_cast<MPI_Fint>(fcomm)); }

// `op` by name; `who` names the caller in errors. The ring has no product.
Op parse_op(const std::string& op, const char* who, bool product) {
  if (op == "sum") return Op::Sum;
  if (op == "avg") return Op::Avg;
  if (op == "max") return Op::Max;
  if (op == "min") return Op::Min;
  if (product && op == "product") return Op::Product;
  throw py::value_error(std::string(who) + ": op must be 'sum', 'avg', 'max', 'min'" +
                        (product ? " or 'product'" : "") + ", got '" + op + "'");
}

// The array's Dtype; `who` names the caller in errors. The ring reduces floats only.
Dtype dtype_of(const py::array& array, const char* who, bool integers) {
  if (array.dtype().equal(py::dtype::of<float>())) return Dtype::Float32;
  if (array.dtype().equal(py::dtype::of<double>())) return Dtype::Float64;
  if (integers && array.dtype().equal(py::dtype::of<int32_t>())) return Dtype::Int32;
  if (integers && array.dtype().equal(py::dtype::of<int64_t>())) return Dtype::Int64;
  throw py::type_error(std::string(who) + ": the array must be float32" +
                       (integers ? ", float64, int32 or int64" : " or float64") +
                       " in native byte order, got " + std::string(py::str(array.dtype())));
}

void ring_allreduce(int64_t fcomm, py::array buffer, const std::string& op, int64_t segment_bytes) {
  const Dtype dtype = dtype_of(buffer, "ring_allreduce", false);
  const Op parsed_op = parse_op(op, "ring_allreduce", false);
  // Elementwise in place over the raw memory, so C or Fortran order both work;
  // a strided view would need a gather and scatter the caller should see.
  const py::object flags = buffer.attr("flags");
  if (!flags.attr("c_contiguous").cast<bool>() && !flags.attr("f_contiguous").cast<bool>()) {
    throw py::value_error("ring_allreduce: buffer must be contiguous, got shape " +
                          std::string(py::str(buffer.attr("shape"))) + " with byte strides " +
                          std::string(py::str(buffer.attr("strides"))) +
                          "; reduce np.ascontiguousarray(x) and copy back");
  }
  if (!buffer.writeable()) throw py::value_error("ring_allreduce: buffer is read-only; the reduction is in place");
  const MPI_Comm comm = comm_from_fortran(fcomm);
  void* data = buffer.mutable_data();
  const int64_t count = buffer.size();
  // `buffer` stays referenced by this frame, so the memory outlives the ring.
  // The caller has checked that every rank passes the same count, dtype and op.
  py::gil_scoped_release release;
  pyrt::comm::ring_allreduce(comm, data, count, dtype, parsed_op, segment_bytes);
}

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(text, &len);  // allowed before MPI_Init
  return std::string(text, static_cast<size_t>(len));
}


// --- shared memory ------------------------------------------------------------------

void* writable_contiguous_data(py::array& array, const char* what) {
  if (!(array.flags() & py::array::c_style)) {
    throw py::value_error(std::string(what) + ": the array must be C-contiguous");
  }
  if (!array.writeable()) throw py::value_error(std::string(what) + ": the array is read-only");
  return array.mutable_data();
}

using Record = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// The watchdog's wait, entered with the GIL when the spin budget runs out.
pyrt::comm::SlowWait slow_wait(const py::function& wait) {
  return [&wait](int64_t barrier) {
    py::gil_scoped_acquire gil;
    wait(barrier);
  };
}

void bind_shared_memory(py::module_& m) {
  py::class_<SharedMemoryComm>(m, "SharedMemoryComm",
                               "All-reduce and call agreement through node shared memory (csrc/comm/shm.h).")
      .def(py::init([](int rank, const std::vector<uintptr_t>& segments, int64_t slot_bytes, double spin_seconds,
                       int64_t record_words, double sleep_seconds, int64_t idle_fcomm) {
             std::vector<char*> pointers;
             for (uintptr_t address : segments) pointers.push_back(reinterpret_cast<char*>(address));
             const MPI_Comm idle = comm_from_fortran(idle_fcomm);  // nobody sends on it
             auto progress = [idle]() {
               int flag = 0;
               MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, idle, &flag, MPI_STATUS_IGNORE);
             };
             return std::make_unique<SharedMemoryComm>(rank, std::move(pointers), slot_bytes, spin_seconds,
                                                       record_words, sleep_seconds, progress);
           }),
           py::arg("rank"), py::arg("segments"), py::arg("slot_bytes"), py::arg("spin_seconds"),
           py::arg("record_words"), py::arg("sleep_seconds"), py::arg("idle_fcomm"))
      .def_property_readonly("barriers", &SharedMemoryComm::barriers)
      .def("reached", &SharedMemoryComm::reached, py::arg("barrier"))
      .def(
          "record",
          [](const SharedMemoryComm& self, int q, int64_t words) {
            if (q < 0 || q >= self.size()) throw py::index_error("record: no rank " + std::to_string(q));
            if (words < 0 || words > pyrt::comm::kMaxRecordWords) throw py::value_error("record: bad length");
            Record copy(words);
            std::memcpy(copy.mutable_data(), self.record(q), words * sizeof(int64_t));
            return copy;
          },
          py::arg("rank"), py::arg("words"), "Rank q's record of the latest barrier (a copy).")
      .def(
          "agree",
          [](SharedMemoryComm& self, const Record& record, const py::function& wait) {
            const auto slow = slow_wait(wait);
            py::gil_scoped_release release;
            return self.agree(record.data(), record.size(), slow);
          },
          py::arg("record"), py::arg("wait"), "Barrier carrying record; True when every rank's is equal.")
      .def(
          "all_reduce",
          [](SharedMemoryComm& self, py::array array, const std::string& op, const Record& record,
             const py::function& wait) {
            void* data = writable_contiguous_data(array, "shared-memory all-reduce");
            const Dtype dtype = dtype_of(array, "shared-memory all-reduce", true);
            const Op parsed = parse_op(op, "shared-memory all-reduce", true);
            const auto slow = slow_wait(wait);
            py::gil_scoped_release release;
            return self.all_reduce(data, array.size(), dtype, parsed, record.data(), record.size(), slow);
          },
          py::arg("array"), py::arg("op"), py::arg("record"), py::arg("wait"),
          "In-place all-reduce staged through the slots; False (array untouched) when records differ.")
      .def(
          "all_reduce_symmetric",
          [](SharedMemoryComm& self, py::array array, const std::vector<uintptr_t>& copies, const std::string& op,
             const Record& record, const py::function& wait) {
            void* data = writable_contiguous_data(array, "shared-memory all-reduce");
            if (static_cast<int>(copies.size()) != self.size() ||
                copies[self.rank()] != reinterpret_cast<uintptr_t>(data)) {
              throw py::value_error("shared-memory all-reduce: copies must list every rank's address, this "
                                    "rank's being the array's");
            }
            std::vector<char*> pointers;
            for (uintptr_t address : copies) pointers.push_back(reinterpret_cast<char*>(address));
            const Dtype dtype = dtype_of(array, "shared-memory all-reduce", true);
            const Op parsed = parse_op(op, "shared-memory all-reduce", true);
            const auto slow = slow_wait(wait);
            py::gil_scoped_release release;
            return self.all_reduce_symmetric(pointers, array.size(), dtype, parsed, record.data(), record.size(),
                                             slow);
          },
          py::arg("array"), py::arg("copies"), py::arg("op"), py::arg("record"), py::arg("wait"),
          "Zero-copy all-reduce of array, whose copy on rank q is at copies[q].");
  m.attr("SHM_CONTROL_BYTES") = pyrt::comm::kControlBytes;
}

}  // namespace

PYBIND11_MODULE(_comm, m) {
  m.doc() = "pyrt ring all-reduce over MPI (private: use pyrt.distributed; import mpi4py.MPI first)";

  m.def("ring_allreduce", &ring_allreduce, py::arg("fcomm"), py::arg("buffer"), py::arg("op") = "sum",
        py::arg("segment_bytes") = pyrt::comm::kDefaultSegmentBytes,
        "In-place ring all-reduce of a contiguous float32/float64 array across comm (fcomm = comm.py2f()).\n"
        "op: 'sum', 'max', 'min' or 'avg' (sum divided by the group size). Collective; GIL released.");
  m.def("mpi_library_version", &mpi_library_version,
        "MPI_Get_library_version of the MPI this module is linked to; must equal mpi4py's.");
  m.attr("DEFAULT_SEGMENT_BYTES") = pyrt::comm::kDefaultSegmentBytes;
  // numpy's own ways (__array_interface__, .ctypes) build an object per call: 3 us, twice per
  // zero-copy all-reduce, where this is 0.1.
  m.def(
      "address", [](const py::array& array) { return reinterpret_cast<uintptr_t>(array.data()); },
      py::arg("array"), "Address of the array's first element.");
  bind_shared_memory(m);
  m.attr("MPI_HEADER_VERSION") =
#ifdef MPICH_VERSION
      std::string("MPICH ") + MPICH_VERSION;
#else
      std::to_string(MPI_VERSION) + "." + std::to_string(MPI_SUBVERSION);
#endif
}
