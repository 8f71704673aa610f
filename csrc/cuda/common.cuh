// Shared CUDA helpers: CUDA_CHECK (throws std::runtime_error "file:line: msg", never exits)
// and the launch-check macro used after every kernel launch.
#pragma once
#include <cuda_runtime.h>

#include <sstream>
#include <stdexcept>

#include "../check.h"

#define CUDA_CHECK(expr)                                                            \
  do {                                                                              \
    cudaError_t lf_err_ = (expr);                                                   \
    if (lf_err_ != cudaSuccess) {                                                   \
      std::ostringstream lf_os_;                                                    \
      lf_os_ << __FILE__ << ":" << __LINE__ << ": " << #expr << ": "                \
             << cudaGetErrorName(lf_err_) << ": " << cudaGetErrorString(lf_err_);   \
      throw std::runtime_error(lf_os_.str());                                       \
    }                                                                               \
  } while (0)

// After every <<<...>>>: a bad launch configuration surfaces here, not at a later sync.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace lf {
template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) { return (a + b - 1) / b; }
}  // namespace lf
