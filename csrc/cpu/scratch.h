// Per-thread cache of the kernels' 64-byte aligned scratch blocks (packed operands, padded or
// transposed copies, per-thread partial sums).
//
// Kernels allocate their scratch once per call; fresh blocks of a few MB come straight from
// mmap, so every call would page-fault them in again (measured: about 2 ms of a 4 ms CNN
// training step). Released blocks are kept instead, per thread, and handed back to the
// next request they fit (best fit). At most kScratchKeep blocks stay cached per thread;
// beyond that the smallest is freed. Cached blocks are freed when their thread exits.
#pragma once
#include <cstddef>

namespace lf {

constexpr int kScratchKeep = 16;

// A block of at least `bytes` bytes, 64-byte aligned; *capacity receives its real size.
void* scratch_acquire(size_t bytes, size_t* capacity);
// Gives a block from scratch_acquire back (to this thread's cache).
void scratch_release(void* p, size_t capacity);

}  // namespace lf
