// Error helpers shared by every backend: throw, never exit.
// LF_CHECK  -> std::invalid_argument (pybind11 turns it into ValueError).
// CUDA_CHECK -> std::runtime_error "file:line: <cuda error string>" (defined in cuda/common.cuh).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

#define LF_CHECK(cond, msg)                                                   \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::ostringstream lf_check_os_;                                        \
      lf_check_os_ << msg;                                                    \
      throw std::invalid_argument(lf_check_os_.str());                        \
    }                                                                         \
  } while (0)
