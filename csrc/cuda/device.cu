// Device discovery for the CUDA module (the device count and each device's properties) and
// the current-device guard used around every kernel call.
#include <string>
#include <vector>

#include "common.cuh"
#include "device.h"

namespace lf {

CudaStatus cuda_status() {
  CudaStatus st{};
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    // No driver or no device is a normal state on CPU machines: report it, do not throw.
    (void)cudaGetLastError();
    st.device_count = 0;
    st.error = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
  } else {
    st.device_count = count;
  }
  cudaRuntimeGetVersion(&st.runtime_version);
  if (cudaDriverGetVersion(&st.driver_version) != cudaSuccess) st.driver_version = 0;
  for (int i = 0; i < st.device_count; ++i) {
    cudaDeviceProp p{};
    CUDA_CHECK(cudaGetDeviceProperties(&p, i));
    st.devices.push_back({i, p.name, p.major, p.minor, static_cast<int64_t>(p.totalGlobalMem),
                          p.multiProcessorCount});
  }
  return st;
}

CudaDeviceGuard::CudaDeviceGuard(int device) {
  CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != device) {
    CUDA_CHECK(cudaSetDevice(device));
    changed_ = true;
  }
}

CudaDeviceGuard::~CudaDeviceGuard() {
  // A destructor must not throw; restoring a device that was current a moment ago only fails
  // when the context is already broken, which the next call reports.
  if (changed_) (void)cudaSetDevice(prev_);
}

}  // namespace lf
