// The zigzag token partition (tsp-spec §3). Each sequence of S tokens is cut into 2D chunks of
// c = S/2D; rank r holds chunks r and 2D-1-r, so every rank gets one early (cheap) and one late
// (expensive) chunk of causal work. Local layout [B, 2, c, ...], batch outermost.
//
//   S = 16, D = 2 (c = 4):   chunk  0    1    2    3
//                            rank   0    1    1    0     rank 0: tokens 0-3, 12-15
//                                                        rank 1: tokens 4-11
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

namespace origami {

struct Zigzag {
  int64_t B, S;
  int D, r;
  // Packed documents: the batch's global document starts [B, S] (Batch::doc_start), or null.
  const int64_t* doc = nullptr;
  // --balance documents: rank q's chunks are own[2q] and own[2q+1] (2D entries); null: zigzag.
  const int* own = nullptr;
  // The attention kernels' lower bounds for sequence b's queries from position pos0 (QSeg::lo).
  const int64_t* lo(int64_t b, int64_t pos0) const { return doc ? doc + b * S + pos0 : nullptr; }
  int64_t chunk() const { return S / (2 * D); }
  int64_t local_tokens() const { return B * 2 * chunk(); }
  // Global position (within its sequence) of the first token of local chunk k (0 or 1).
  int64_t chunk_pos0(int k) const { return chunk_pos0_of(r, k); }
  int64_t chunk_pos0_of(int rank, int k) const {
    return (own ? own[2 * rank + k] : k == 0 ? rank : 2 * D - 1 - rank) * chunk();
  }
  // Global position of every local row, [B, 2, c] order.
  std::vector<int64_t> positions() const {
    std::vector<int64_t> p;
    for (int64_t b = 0; b < B; ++b)
      for (int k = 0; k < 2; ++k)
        for (int64_t i = 0; i < chunk(); ++i) p.push_back(chunk_pos0(k) + i);
    return p;
  }
  // Copy this rank's rows of a global [B, S, w] array into local [B, 2, c, w].
  template <class T>
  void shard(T* local, const T* global, int64_t w) const {
    const int64_t c = chunk();
    for (int64_t b = 0; b < B; ++b)
      for (int k = 0; k < 2; ++k)
        std::memcpy(local + ((b * 2 + k) * c) * w, global + (b * S + chunk_pos0(k)) * w,
                    sizeof(T) * c * w);
  }
  // Place rank `rank`'s local rows into a global [B, S, w] array.
  template <class T>
  void unshard(T* global, const T* local, int64_t w, int rank) const {
    const int64_t c = chunk();
    for (int64_t b = 0; b < B; ++b)
      for (int k = 0; k < 2; ++k)
        std::memcpy(global + (b * S + chunk_pos0_of(rank, k)) * w, local + ((b * 2 + k) * c) * w,
                    sizeof(T) * c * w);
  }
};

}  // namespace origami
