// Host-side view of the CUDA devices, filled by csrc/cuda/device.cu (no CUDA types here, so
// the pybind11 binding compiles with the host compiler).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lf {

struct CudaDevice {
  int index;
  std::string name;
  int major, minor;
  int64_t total_memory;
  int multiprocessors;
};

struct CudaStatus {
  int device_count;
  int runtime_version;
  int driver_version;
  std::string error;  // empty when the runtime answered normally
  std::vector<CudaDevice> devices;
};

CudaStatus cuda_status();

}  // namespace lf
