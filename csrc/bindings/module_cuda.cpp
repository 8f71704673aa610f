// pybind11 module layerforge._cuda: build info and device discovery. Importing it never needs
// a GPU or a driver (cudart is static; the driver is looked up at the first call).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda/device.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "layerforge CUDA module (device discovery; op kernels come later)";
  m.def("build_info", [] {
    py::dict d;
    d["cuda_compiler_version"] = LAYERFORGE_CUDA_COMPILER_VERSION;
    d["architectures"] = LAYERFORGE_CUDA_ARCHS;
    d["cudart"] = "static";
    return d;
  });
  m.def("device_count", [] {
    lf::CudaStatus st;
    {
      py::gil_scoped_release nogil;
      st = lf::cuda_status();
    }
    return st.device_count;
  });
  m.def("status", [] {
    lf::CudaStatus st;
    {
      py::gil_scoped_release nogil;
      st = lf::cuda_status();
    }
    py::dict d;
    d["device_count"] = st.device_count;
    d["runtime_version"] = st.runtime_version;
    d["driver_version"] = st.driver_version;
    d["error"] = st.error.empty() ? py::object(py::none()) : py::object(py::str(st.error));
    py::list devs;
    for (const auto& dv : st.devices) {
      py::dict e;
      e["index"] = dv.index;
      e["name"] = dv.name;
      e["compute_capability"] = py::make_tuple(dv.major, dv.minor);
      e["total_memory"] = dv.total_memory;
      e["multiprocessors"] = dv.multiprocessors;
      devs.append(e);
    }
    d["devices"] = devs;
    return d;
  });
}
