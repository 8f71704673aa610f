// Device discovery for the CUDA module: the device count and each device's properties.
// The op kernels come with the CUDA backend issue; this file is what _cuda holds so far.
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

}  // namespace lf
