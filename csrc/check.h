// Error helpers shared by every backend: throw, never exit.
// LF_CHECK  -> std::invalid_argument (pybind11 turns it into ValueError).
// CUDA_CHECK -> std::runtime_error "file:line: <cuda error string>" (defined in cuda/common.cuh).
#pragma once
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace lf {

// The message builder of LF_CHECK and CUDA_CHECK: strings, integers (std::to_string) and
// floating point (%g). No iostreams anywhere in the modules: on an H100 machine (gcc 13.3,
// Python 3.12 venv, pybind11 3.1, CUDA 13.0) formatting a number through std::ostringstream
// crashed inside _cuda (SIGSEGV in std::ostream::_M_insert<long>), and reading one through
// std::ifstream inside _C, so every argument check that named a number brought the process
// down instead of raising. (Cause inside the stream code not established; C stdio works.)
class Msg {
 public:
  Msg& operator<<(const std::string& s) { s_ += s; return *this; }
  Msg& operator<<(const char* s) { s_ += s; return *this; }
  Msg& operator<<(char c) { s_ += c; return *this; }
  template <class T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, char>, int> = 0>
  Msg& operator<<(T v) { s_ += std::to_string(v); return *this; }
  template <class T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
  Msg& operator<<(T v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
    s_ += buf;
    return *this;
  }
  const std::string& str() const { return s_; }

 private:
  std::string s_;
};

// A shape as Python prints a tuple, for messages: (2, 3), (5,), ().
inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

}  // namespace lf

#define LF_CHECK(cond, msg)                                                   \
  do {                                                                        \
    if (!(cond)) {                                                            \
      ::lf::Msg lf_check_msg_;                                                \
      lf_check_msg_ << msg;                                                   \
      throw std::invalid_argument(lf_check_msg_.str());                       \
    }                                                                         \
  } while (0)
