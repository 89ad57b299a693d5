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
#include <stdexcept>
#include <string>

#include "comm/ring.h"

namespace py = pybind11;
using pyrt::comm::Dtype;
using pyrt::comm::Op;

namespace {

MPI_Comm comm_from_fortran(int64_t fcomm) { return MPI_Comm_f2c(static_cast<MPI_Fint>(fcomm)); }

Op parse_op(const std::string& op) {
  if (op == "sum") return Op::Sum;
  if (op == "max") return Op::Max;
  if (op == "min") return Op::Min;
  if (op == "avg") return Op::Avg;
  throw py::value_error("ring_allreduce: op must be 'sum', 'max', 'min' or 'avg', got '" + op + "'");
}

Dtype dtype_of(const py::array& buffer) {
  if (buffer.dtype().equal(py::dtype::of<float>())) return Dtype::Float32;
  if (buffer.dtype().equal(py::dtype::of<double>())) return Dtype::Float64;
  throw py::type_error("ring_allreduce: buffer must be float32 or float64 in native byte order, got " +
                       std::string(py::str(buffer.dtype())));
}

void ring_allreduce(int64_t fcomm, py::array buffer, const std::string& op, int64_t segment_bytes) {
  const Dtype dtype = dtype_of(buffer);
  const Op parsed_op = parse_op(op);
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
  m.attr("MPI_HEADER_VERSION") =
#ifdef MPICH_VERSION
      std::string("MPICH ") + MPICH_VERSION;
#else
      std::to_string(MPI_VERSION) + "." + std::to_string(MPI_SUBVERSION);
#endif
}
