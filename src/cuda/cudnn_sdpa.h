// The bf16 speed path of attention: cuDNN 9's fused flash SDPA, reached through the backend graph
// API (cudnn_graph.h, no frontend library). A composite graph (matmul, scale, causal mask from
// generated row/column indices shifted by a by-value scalar, softmax with Stats, matmul) is what
// cuDNN recognises as its SDPA forward; the backward graph recomputes P from Stats and writes dQ
// directly (no fp32 dQ accumulator: the deterministic variant). One call is one query range
// against one contiguous key range of the same row layout as the rest of origami: token-major
// rows, heads side by side (q[row * q_stride + h * d + e]), Stats [hq, lse_stride] in fp32 =
// the natural log-sum-exp of the scaled masked scores (origami's lse).
//
// Plans are cached per call shape; the causal shift (query position − key position of the first
// rows) and the scale are passed by value at execute time, so one plan serves every shift.
// Planning needs no GPU: given a device description (cuDNN's DEVICEPROP JSON) the heuristics run
// on a build machine, which is how CI checks that cuDNN accepts every graph at the shapes the
// schedules use (tests/cuda/test_cudnn_plan.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/kernels.h"

namespace origami::cuda::cudnn {

// cuDNN's version as the loaded library reports it (e.g. 91900), 0 when cuDNN was not built in.
int64_t version();

enum class Dir { fwd, bwd };

// One call: sq query rows against skv keys, hq query heads over hk kv heads (GQA), head dim d.
struct SdpaDims {
  int64_t hq = 0, hk = 0, d = 0;
  int64_t sq = 0, skv = 0;
  int64_t q_stride = 0;    // row stride of q, o, dout, dq (elements)
  int64_t kv_stride = 0;   // row stride of k, v, dk, dv
  int64_t lse_stride = 0;  // Stats: [hq, lse_stride]
  bool operator<(const SdpaDims& o) const;
};
// Throws with the field and the constraint when cuDNN's flash engines cannot take the shape
// (hq % hk, d % 8 and d ≤ 256, strides that hold the heads, positive sizes).
void validate(const SdpaDims& s);

// The 4-D dims and strides a graph declares for each tensor (batch 1, [b, h, s, d] order); public
// so tests can check them without cuDNN.
struct Layout {
  int64_t dim[4], stride[4];
};
Layout q_layout(const SdpaDims& s);   // also o, dout, dq
Layout kt_layout(const SdpaDims& s);  // Kᵀ: [1, hk, d, skv]
Layout v_layout(const SdpaDims& s);   // also k, dk, dv
Layout stats_layout(const SdpaDims& s);

// Device-less planning: build the graph, run the heuristics (mode A) against the device the JSON
// describes, and report what cuDNN offers. Heuristics return only configurations that pass their
// support checks, so a graph cuDNN does not recognise (wrong stride, dtype, op order) shows up as
// no engines or as the error text.
struct PlanReport {
  int64_t ops = 0;                  // operations in the graph
  std::vector<int64_t> engines;     // global engine index of each configuration offered
  std::vector<bool> deterministic;  // per configuration: no NONDETERMINISTIC numerical note
  std::string error;                // empty when the heuristics ran
};
PlanReport check_plan(Dir dir, const SdpaDims& s, const std::string& deviceprop_json,
                      bool deterministic = true, bool shifted = true);

// The JSON cuDNN describes the current device with (for the CI fixture); needs a device.
std::string device_properties_json();

// ---- Execution on the current stream (bf16 tensors, fp32 Stats) -------------------------------
using bf16_t = uint16_t;  // storage of a bfloat16 (the kernels' cuda::bf16 has the same bits)
// o, lse written for the sq rows; shift = global position of query row 0 − that of key 0.
void sdpa_fwd(void* o, float* lse, const void* q, const void* k, const void* v, const SdpaDims& s,
              float scale, int64_t shift);
// dq, dk, dv written (not accumulated); lse and o from the forward over *all* keys of these rows,
// so calls over several key ranges add up to the full gradient.
void sdpa_bwd(void* dq, void* dk, void* dv, const void* dout, const void* q, const void* k,
              const void* v, const void* o, const float* lse, const SdpaDims& s, float scale,
              int64_t shift);
// Plans built so far (a rerun at a known shape builds none).
int64_t plans_cached();
// The backward's dQ: written directly by a deterministic engine (default: reruns are bitwise
// equal), or off: accumulated in fp32 by cuDNN's faster engines in no fixed order (benchmarks).
void set_deterministic(bool on);
// cuDNN's global index of the engine planned for a shape (-1 before its first call).
int64_t engine_of(Dir dir, const SdpaDims& s, int64_t shift);

// ---- The segment contract of cuda::flash_attn_fwd/bwd over cuDNN calls (bf16) -----------------
// One call for a query segment: its rows [r0, r0 + rows) against keys [0, keys) of kv segment
// `kv`, shift = position of row r0 − position of that key 0. Rows that see none of a segment's
// keys and keys that no row sees are left out, so no call has a fully masked row.
struct Call {
  int kv;
  int64_t r0, rows, keys, shift;
  bool operator==(const Call& o) const {
    return kv == o.kv && r0 == o.r0 && rows == o.rows && keys == o.keys && shift == o.shift;
  }
};
std::vector<Call> plan_calls(const QSeg& q, const int64_t* kv_pos0, const int64_t* kv_len, int nks);
// As flash_attn_fwd: o and lse written. A segment that one call covers is written by cuDNN
// directly; otherwise each call's (o, lse) is merged into the rows by log-sum-exp.
void attn_fwd(bf16* o, float* lse, int64_t lse_stride, const bf16* q, int64_t q_stride,
              const QSeg* qs, int nqs, const KvSeg<bf16>* ks, int nks, AttnShape sh, float scale);
// As flash_attn_bwd: dq and each segment's dk, dv accumulated (+=) from per-call gradients.
void attn_bwd(bf16* dq, const bf16* dout, const bf16* q, const bf16* o, int64_t q_stride,
              const float* lse, int64_t lse_stride, const QSeg* qs, int nqs, const KvSeg<bf16>* ks,
              int nks, AttnShape sh, float scale);

}  // namespace origami::cuda::cudnn
