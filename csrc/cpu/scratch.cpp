// The per-thread scratch cache (see scratch.h).
#include "cpu/scratch.h"

#include <new>

namespace lf {
namespace {

struct Block {
  void* p = nullptr;
  size_t cap = 0;
};

void free_block(const Block& b) { ::operator delete(b.p, std::align_val_t(64)); }

struct Cache {
  Block blocks[kScratchKeep];
  int n = 0;
  ~Cache() {
    for (int i = 0; i < n; ++i) free_block(blocks[i]);
  }
};

Cache& cache() {
  static thread_local Cache c;
  return c;
}

}  // namespace

void* scratch_acquire(size_t bytes, size_t* capacity) {
  Cache& c = cache();
  int best = -1;
  for (int i = 0; i < c.n; ++i)
    if (c.blocks[i].cap >= bytes && (best < 0 || c.blocks[i].cap < c.blocks[best].cap)) best = i;
  if (best >= 0) {
    const Block b = c.blocks[best];
    c.blocks[best] = c.blocks[--c.n];
    *capacity = b.cap;
    return b.p;
  }
  // Round up so that slightly different sizes (another batch size) reuse blocks.
  const size_t cap = bytes <= 4096 ? 4096 : (bytes + 65535) / 65536 * 65536;
  void* p = ::operator new(cap, std::align_val_t(64));
  *capacity = cap;
  return p;
}

void scratch_release(void* p, size_t capacity) {
  if (!p) return;
  Cache& c = cache();
  if (c.n < kScratchKeep) {
    c.blocks[c.n++] = Block{p, capacity};
    return;
  }
  int smallest = 0;
  for (int i = 1; i < c.n; ++i)
    if (c.blocks[i].cap < c.blocks[smallest].cap) smallest = i;
  if (c.blocks[smallest].cap < capacity) {
    free_block(c.blocks[smallest]);
    c.blocks[smallest] = Block{p, capacity};
  } else {
    free_block(Block{p, capacity});
  }
}

}  // namespace lf
