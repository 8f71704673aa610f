// Host-side view of the CUDA devices, filled by csrc/cuda/device.cu, and the current-device
// guard the bindings use (no CUDA types here, so the pybind11 binding compiles with the host
// compiler).
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

// Makes `device` current for the guard's lifetime and restores the previous current device
// afterwards (also when the guarded call throws). Throws std::runtime_error when the device
// cannot be set (bad ordinal, no driver).
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(int device);
  ~CudaDeviceGuard();
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int prev_ = -1;
  bool changed_ = false;
};

}  // namespace lf
