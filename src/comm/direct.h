// What one operation costs a rank under the direct algorithm (tsp-spec §7): the bytes it receives
// (what every communicator records), and the scratch the fixed-order reductions hold from the post
// until the request is dropped (what MpiComm allocates, in elements of the payload's type,
// category comm). MpiComm and the dry run's communicator (sim_comm.h) both take them from here,
// so the planner's bytes and buffers are the engine's by construction.
#pragma once
#include <cstdint>
#include <vector>

namespace origami::direct {

inline int64_t recv(int rank, int src, int64_t bytes) {
  return src == rank ? 0 : bytes;
}
inline int64_t bcast(int rank, int root, int64_t bytes) {
  return rank == root ? 0 : bytes;
}
inline int64_t allgather(int size, int64_t block_bytes) {
  return (size - 1) * block_bytes;
}
inline int64_t alltoallv(int size, int rank, const int64_t* recv_bytes) {
  int64_t in = 0;
  for (int i = 0; i < size; ++i)
    if (i != rank) in += recv_bytes[i];
  return in;
}
inline int64_t reduce_scatter(int size, int64_t own_block_bytes) {
  return (size - 1) * own_block_bytes;
}
inline int64_t reduce(int size, int rank, int root, int64_t bytes) {
  return rank == root ? (size - 1) * bytes : 0;
}
inline int64_t allreduce(int size, int64_t bytes) {
  return 2 * (size - 1) * bytes / size;
}

// The all-reduce's blocks: n elements padded to size equal blocks of m.
inline int64_t allreduce_block(int size, int64_t n) {
  return (n + size - 1) / size;
}
// Scratch shapes, in the order allocated. A reduce-scatter of own block n, and a reduce's root:
// the size-1 received blocks. An all-reduce (size > 1) reduces and gathers in place: only its
// reduce-scatter's size-1 received blocks [size-1, m].
inline std::vector<std::vector<int64_t>> reduce_scatter_scratch(int size, int64_t n) {
  if (size <= 1) return {};
  return {{size - 1, n}};
}
inline std::vector<std::vector<int64_t>> reduce_scratch(int size, int rank, int root, int64_t n) {
  if (size <= 1 || rank != root) return {};
  return {{size - 1, n}};
}
inline std::vector<std::vector<int64_t>> allreduce_scratch(int size, int64_t n) {
  if (size <= 1) return {};
  return reduce_scatter_scratch(size, allreduce_block(size, n));
}

}  // namespace origami::direct
