// cuDNN SDPA through the backend graph API; see cudnn_sdpa.h. The graphs follow the composite
// form cuDNN 9 recognises as its flash attention (forward engine 2, backward engines 6/7 on
// Hopper): every intermediate virtual and fp32 except the two operands cuDNN wants in the input
// type (P before P·V, Pᵀ and dSᵀ before their products), K passed as Kᵀ by swapping dims and
// strides.
#include "cuda/cudnn_sdpa.h"

#include <cudnn_graph.h>

#include <array>
#include <atomic>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "core/error.h"
#include "cuda/runtime.h"

namespace origami::cuda::cudnn {

int64_t version() {
  return static_cast<int64_t>(cudnnGetVersion());
}

bool SdpaDims::operator<(const SdpaDims& o) const {
  return std::tie(hq, hk, d, sq, skv, q_stride, kv_stride, lse_stride) <
         std::tie(o.hq, o.hk, o.d, o.sq, o.skv, o.q_stride, o.kv_stride, o.lse_stride);
}

void validate(const SdpaDims& s) {
  if (s.hq <= 0 || s.hk <= 0 || s.d <= 0 || s.sq <= 0 || s.skv <= 0)
    fail("cuDNN SDPA: hq=", s.hq, " hk=", s.hk, " d=", s.d, " sq=", s.sq, " skv=", s.skv,
         " must all be positive");
  if (s.hq % s.hk)
    fail("cuDNN SDPA: query heads hq=", s.hq, " are not divisible by kv heads hk=", s.hk);
  if (s.d % 8 || s.d > 256)
    fail("cuDNN SDPA: head_dim=", s.d, " must be a multiple of 8 and at most 256 (Hopper flash)");
  if (s.q_stride < s.hq * s.d || s.q_stride % 8)
    fail("cuDNN SDPA: q_stride=", s.q_stride, " must hold hq*d=", s.hq * s.d,
         " and be a multiple of 8 (16-byte rows)");
  if (s.kv_stride < s.hk * s.d || s.kv_stride % 8)
    fail("cuDNN SDPA: kv_stride=", s.kv_stride, " must hold hk*d=", s.hk * s.d,
         " and be a multiple of 8 (16-byte rows)");
  if (s.lse_stride < s.sq)
    fail("cuDNN SDPA: lse_stride=", s.lse_stride, " is smaller than the rows sq=", s.sq);
}

Layout q_layout(const SdpaDims& s) {
  return {{1, s.hq, s.sq, s.d}, {s.sq * s.q_stride, s.d, s.q_stride, 1}};
}
Layout kt_layout(const SdpaDims& s) {
  return {{1, s.hk, s.d, s.skv}, {s.skv * s.kv_stride, s.d, 1, s.kv_stride}};
}
Layout v_layout(const SdpaDims& s) {
  return {{1, s.hk, s.skv, s.d}, {s.skv * s.kv_stride, s.d, s.kv_stride, 1}};
}
Layout stats_layout(const SdpaDims& s) {
  return {{1, s.hq, s.sq, 1}, {s.hq * s.lse_stride, s.lse_stride, 1, 1}};
}

namespace {

[[noreturn]] void fail_cudnn(cudnnStatus_t st, const char* what) {
  char last[512] = {};
  cudnnGetLastErrorString(last, sizeof(last));
  fail("cuDNN ", what, ": ", cudnnGetErrorString(st), last[0] ? " (" : "", last,
       last[0] ? ")" : "");
}
void check(cudnnStatus_t st, const char* what) {
  if (st != CUDNN_STATUS_SUCCESS) fail_cudnn(st, what);
}

// An owned backend descriptor.
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t t) {
    check(cudnnBackendCreateDescriptor(t, &d_), "create descriptor");
  }
  ~Desc() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  template <class V>
  Desc& set(cudnnBackendAttributeName_t a, cudnnBackendAttributeType_t t, const V* v,
            int64_t n = 1) {
    check(cudnnBackendSetAttribute(d_, a, t, n, v), "set attribute");
    return *this;
  }
  Desc& finalize(const char* what) {
    check(cudnnBackendFinalize(d_), what);
    return *this;
  }
  cudnnBackendDescriptor_t get() const { return d_; }

 private:
  cudnnBackendDescriptor_t d_{};
};
using DescP = std::unique_ptr<Desc>;

// The deprecated handle attributes, named by value so the build stays free of warnings; cuDNN
// 9.x still honours them and the runtime path uses them (planning without a GPU uses DEVICEPROP).
constexpr auto kGraphHandle = static_cast<cudnnBackendAttributeName_t>(800);
constexpr auto kPlanHandle = static_cast<cudnnBackendAttributeName_t>(400);

// Fixed ids of the tensors a caller binds.
enum Uid : int64_t {
  kQ = 1,
  kK,
  kV,
  kO,
  kStats,
  kScale,
  kShift,
  kNegInf,
  kDO,
  kDQ,
  kDK,
  kDV,
  kSoftmaxSum,
  kOne,
  kDQAccum
};

std::atomic<bool> g_deterministic{true};

class Graph {
 public:
  using T = cudnnBackendDescriptor_t;
  T tensor(int64_t uid, const Layout& l, cudnnDataType_t dt, bool is_virtual,
           bool by_value = false) {
    auto& d = keep(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    int64_t align = 16;
    d.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, &dt)
        .set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, l.dim, 4)
        .set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, l.stride, 4)
        .set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, &uid)
        .set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, &align)
        .set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, &is_virtual);
    if (by_value) d.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, &by_value);
    d.finalize("tensor");
    return d.get();
  }
  T scalar(int64_t uid, cudnnDataType_t dt) {
    return tensor(uid, {{1, 1, 1, 1}, {1, 1, 1, 1}}, dt, false, true);
  }
  T virt(const Layout& l, cudnnDataType_t dt = CUDNN_DATA_FLOAT) {
    return tensor(next_uid_++, l, dt, true);
  }
  // y = op(x[, b][, t]); compute precision prec.
  void pointwise(cudnnPointwiseMode_t mode, T x, T b, T t, T y,
                 cudnnDataType_t prec = CUDNN_DATA_FLOAT, int64_t axis = -1) {
    auto& pw = keep(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, &mode)
        .set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, &prec);
    if (axis >= 0) pw.set(CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, &axis);
    pw.finalize("pointwise descriptor");
    auto pwd = pw.get();
    auto& op = keep(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    op.set(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, &pwd)
        .set(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &x);
    if (b) op.set(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &b);
    if (t) op.set(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &t);
    op.set(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &y)
        .finalize("pointwise operation");
    ops_.push_back(op.get());
  }
  void matmul(T a, T b, T c) {
    auto& mm = keep(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    mm.set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, &comp).finalize("matmul descriptor");
    auto mmd = mm.get();
    auto& op = keep(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    op.set(CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &a)
        .set(CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &b)
        .set(CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &c)
        .set(CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &mmd)
        .finalize("matmul operation");
    ops_.push_back(op.get());
  }
  void reduction(cudnnReduceTensorOp_t mode, T x, T y) {
    auto& rd = keep(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    rd.set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, &mode)
        .set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, &comp)
        .finalize("reduction descriptor");
    auto rdd = rd.get();
    auto& op = keep(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    op.set(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &x)
        .set(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &y)
        .set(CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &rdd)
        .finalize("reduction operation");
    ops_.push_back(op.get());
  }
  void reshape(T x, T y) {
    auto& op = keep(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    op.set(CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &x)
        .set(CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, &y)
        .finalize("reshape operation");
    ops_.push_back(op.get());
  }
  // The operation graph (with the handle when there is a device, without for planning).
  T finish(cudnnHandle_t handle) {
    auto& g = keep(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    g.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, ops_.data(),
          static_cast<int64_t>(ops_.size()));
    if (handle) g.set(kGraphHandle, CUDNN_TYPE_HANDLE, &handle);
    g.finalize("operation graph");
    return g.get();
  }
  int64_t ops() const { return static_cast<int64_t>(ops_.size()); }
  Desc& keep(cudnnBackendDescriptorType_t t) {
    keep_.push_back(std::make_unique<Desc>(t));
    return *keep_.back();
  }

 private:
  std::vector<DescP> keep_;
  std::vector<T> ops_;
  int64_t next_uid_ = 1000;
};

Layout packed(int64_t h, int64_t r, int64_t c) {
  return {{1, h, r, c}, {h * r * c, r * c, c, 1}};
}
Layout transposed(int64_t h, int64_t r, int64_t c) {  // [1, h, r, c] over a packed [h, c, r]
  return {{1, h, r, c}, {h * r * c, r * c, 1, r}};
}

// scores (fp32, [1, hq, sq, skv]) → scores where row + shift ≥ col, −inf elsewhere. Without a
// shift tensor (calls whose first row and first key share a position) the mask is the plain
// top-left causal form.
Graph::T causal_mask(Graph& g, Graph::T s, Graph::T shift, Graph::T neg_inf, const Layout& l) {
  auto row = g.virt(l, CUDNN_DATA_INT32), col = g.virt(l, CUDNN_DATA_INT32);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr, row, CUDNN_DATA_FLOAT, 2);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr, col, CUDNN_DATA_FLOAT, 3);
  if (shift) {
    auto shifted = g.virt(l, CUDNN_DATA_INT32);
    g.pointwise(CUDNN_POINTWISE_ADD, row, shift, nullptr, shifted, CUDNN_DATA_INT32, 3);
    row = shifted;
  }
  auto keep = g.virt(l, CUDNN_DATA_BOOLEAN);
  g.pointwise(CUDNN_POINTWISE_CMP_GE, row, col, nullptr, keep, CUDNN_DATA_BOOLEAN);
  auto out = g.virt(l);
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, s, neg_inf, keep, out);
  return out;
}

void build_fwd(Graph& g, const SdpaDims& s, bool shifted) {
  const auto io = CUDNN_DATA_BFLOAT16;
  auto q = g.tensor(kQ, q_layout(s), io, false);
  auto kt = g.tensor(kK, kt_layout(s), io, false);
  auto v = g.tensor(kV, v_layout(s), io, false);
  auto o = g.tensor(kO, q_layout(s), io, false);
  auto stats = g.tensor(kStats, stats_layout(s), CUDNN_DATA_FLOAT, false);
  auto scale = g.scalar(kScale, CUDNN_DATA_FLOAT);
  auto shift = shifted ? g.scalar(kShift, CUDNN_DATA_INT32) : nullptr;
  auto neg_inf = g.scalar(kNegInf, CUDNN_DATA_FLOAT);
  const Layout sc = packed(s.hq, s.sq, s.skv), row = packed(s.hq, s.sq, 1);

  auto qk = g.virt(sc);
  g.matmul(q, kt, qk);
  auto scaled = g.virt(sc);
  g.pointwise(CUDNN_POINTWISE_MUL, qk, scale, nullptr, scaled);
  auto masked = causal_mask(g, scaled, shift, neg_inf, sc);
  auto mx = g.virt(row);
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, masked, mx);
  auto centred = g.virt(sc);
  g.pointwise(CUDNN_POINTWISE_SUB, masked, mx, nullptr, centred);
  auto e = g.virt(sc);
  g.pointwise(CUDNN_POINTWISE_EXP, centred, nullptr, nullptr, e);
  auto sum = g.virt(row);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, sum);
  auto logsum = g.virt(row);
  g.pointwise(CUDNN_POINTWISE_LOG, sum, nullptr, nullptr, logsum);
  g.pointwise(CUDNN_POINTWISE_ADD, mx, logsum, nullptr, stats);
  auto p = g.virt(sc, io);  // cuDNN takes P·V's A operand in the input type
  g.pointwise(CUDNN_POINTWISE_DIV, e, sum, nullptr, p);
  g.matmul(p, v, o);
}

void build_bwd(Graph& g, const SdpaDims& s, bool deterministic, bool shifted) {
  const auto io = CUDNN_DATA_BFLOAT16;
  auto q = g.tensor(kQ, q_layout(s), io, false);
  auto kt = g.tensor(kK, kt_layout(s), io, false);
  auto vt = g.tensor(kV, kt_layout(s), io, false);  // Vᵀ for dO·Vᵀ
  auto o = g.tensor(kO, q_layout(s), io, false);
  auto dout = g.tensor(kDO, q_layout(s), io, false);
  auto dq = g.tensor(kDQ, q_layout(s), io, false);
  auto dk = g.tensor(kDK, v_layout(s), io, false);
  auto dv = g.tensor(kDV, v_layout(s), io, false);
  auto stats = g.tensor(kStats, stats_layout(s), CUDNN_DATA_FLOAT, false);
  auto scale = g.scalar(kScale, CUDNN_DATA_FLOAT);
  auto shift = shifted ? g.scalar(kShift, CUDNN_DATA_INT32) : nullptr;
  auto neg_inf = g.scalar(kNegInf, CUDNN_DATA_FLOAT);
  auto one = g.scalar(kOne, CUDNN_DATA_FLOAT);
  const Layout sc = packed(s.hq, s.sq, s.skv), row = packed(s.hq, s.sq, 1);

  // D = rowsum(dO ∘ O), kept in a buffer the caller provides (softmax_sum, fp32 [hq, sq]).
  auto prod = g.virt({{1, s.hq, s.sq, s.d}, {s.hq * s.sq * s.d, s.d, s.hq * s.d, 1}});
  g.pointwise(CUDNN_POINTWISE_MUL, dout, o, nullptr, prod);
  auto rs = g.virt(row);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, prod, rs);
  auto dsum = g.tensor(kSoftmaxSum, row, CUDNN_DATA_FLOAT, false);
  g.pointwise(CUDNN_POINTWISE_MUL, rs, one, nullptr, dsum);

  // P = exp(scale·QKᵀ − Stats), masked.
  auto qk = g.virt(sc);
  g.matmul(q, kt, qk);
  auto scaled = g.virt(sc);
  g.pointwise(CUDNN_POINTWISE_MUL, qk, scale, nullptr, scaled);
  auto centred = g.virt(sc);
  g.pointwise(CUDNN_POINTWISE_SUB, scaled, stats, nullptr, centred);
  auto masked = causal_mask(g, centred, shift, neg_inf, sc);
  auto p = g.virt(sc);
  g.pointwise(CUDNN_POINTWISE_EXP, masked, nullptr, nullptr, p);

  // dV = Pᵀ dO (summed over the query heads of a kv head under GQA).
  const bool gqa = s.hq != s.hk;
  auto pt = g.virt(transposed(s.hq, s.skv, s.sq), io);
  g.reshape(p, pt);
  if (!gqa) {
    g.matmul(pt, dout, dv);
  } else {
    auto full = g.virt(packed(s.hq, s.skv, s.d), io);
    g.matmul(pt, dout, full);
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, full, dv);
  }
  // dS = scale · P ∘ (dO Vᵀ − D).
  auto dp = g.virt(sc);
  g.matmul(dout, vt, dp);
  auto dpc = g.virt(sc);
  g.pointwise(CUDNN_POINTWISE_SUB, dp, dsum, nullptr, dpc);
  auto ds0 = g.virt(sc);
  g.pointwise(CUDNN_POINTWISE_MUL, dpc, p, nullptr, ds0);
  auto ds = g.virt(sc);
  g.pointwise(CUDNN_POINTWISE_MUL, ds0, scale, nullptr, ds);
  // dK = dSᵀ Q (summed under GQA).
  auto dst = g.virt(transposed(s.hq, s.skv, s.sq), io);
  g.reshape(ds, dst);
  if (!gqa) {
    g.matmul(dst, q, dk);
  } else {
    auto full = g.virt(packed(s.hq, s.skv, s.d), io);
    g.matmul(dst, q, full);
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, full, dk);
  }
  // dQ = dS K: written directly (the deterministic variant), or through an fp32 accumulator that
  // cuDNN's faster engines add into from several key tiles at once (order not fixed).
  auto k = g.virt(v_layout(s), io);
  g.reshape(kt, k);
  if (deterministic) {
    g.matmul(ds, k, dq);
  } else {
    auto acc = g.tensor(kDQAccum, packed(s.hq, s.sq, s.d), CUDNN_DATA_FLOAT, false);
    g.matmul(ds, k, acc);
    g.pointwise(CUDNN_POINTWISE_IDENTITY, acc, nullptr, nullptr, dq);
  }
}

struct Config {
  int64_t engine = -1;
  bool deterministic = true;
};

// Heuristics (mode A) over a finalized graph; fills cfgs (kept alive by g) and their engines.
std::vector<cudnnBackendDescriptor_t> heuristics(Graph& g, cudnnBackendDescriptor_t graph,
                                                 cudnnBackendDescriptor_t deviceprop,
                                                 std::vector<Config>* info) {
  auto& heur = g.keep(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, &graph)
      .set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, &mode);
  if (deviceprop)
    heur.set(CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, &deviceprop);
  heur.finalize("engine heuristics");
  int64_t n = 0;
  check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &n, nullptr),
        "heuristics result count");
  std::vector<cudnnBackendDescriptor_t> cfgs;
  for (int64_t i = 0; i < n; ++i) cfgs.push_back(g.keep(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR).get());
  int64_t got = 0;
  if (n > 0)
    check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                   CUDNN_TYPE_BACKEND_DESCRIPTOR, n, &got, cfgs.data()),
          "heuristics results");
  cfgs.resize(static_cast<size_t>(got));
  for (auto cfg : cfgs) {
    auto engine = g.keep(CUDNN_BACKEND_ENGINE_DESCRIPTOR).get();
    int64_t cnt = 0;
    Config c;
    if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                 &cnt, &engine) == CUDNN_STATUS_SUCCESS) {
      cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &cnt,
                               &c.engine);
      std::array<cudnnBackendNumericalNote_t, CUDNN_NUMERICAL_NOTE_TYPE_COUNT> notes{};
      int64_t nn = 0;
      if (cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                                   CUDNN_TYPE_NUMERICAL_NOTE, CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &nn,
                                   notes.data()) == CUDNN_STATUS_SUCCESS)
        for (int64_t i = 0; i < nn; ++i)
          if (notes[static_cast<size_t>(i)] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC)
            c.deterministic = false;
    }
    info->push_back(c);
  }
  return cfgs;
}

void build(Graph& g, Dir dir, const SdpaDims& s, bool deterministic, bool shifted) {
  validate(s);
  if (dir == Dir::fwd)
    build_fwd(g, s, shifted);
  else
    build_bwd(g, s, deterministic, shifted);
}

}  // namespace

PlanReport check_plan(Dir dir, const SdpaDims& s, const std::string& deviceprop_json,
                      bool deterministic, bool shifted) {
  PlanReport r;
  try {
    Graph g;
    build(g, dir, s, deterministic, shifted);
    r.ops = g.ops();
    auto graph = g.finish(nullptr);
    auto& dp = g.keep(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR);
    dp.set(CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, deviceprop_json.data(),
           static_cast<int64_t>(deviceprop_json.size()))
        .finalize("device properties from JSON");
    std::vector<Config> info;
    heuristics(g, graph, dp.get(), &info);
    for (auto& c : info) {
      r.engines.push_back(c.engine);
      r.deterministic.push_back(c.deterministic);
    }
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

// ---- Runtime ------------------------------------------------------------------------------------

namespace {

struct Handle {
  cudnnHandle_t h{};
  Handle() { check(cudnnCreate(&h), "create handle"); }
  ~Handle() { cudnnDestroy(h); }
};
cudnnHandle_t handle() {
  static Handle h;  // one device per process in origami
  check(cudnnSetStream(h.h, current_stream()), "set stream");
  return h.h;
}

struct Plan {
  Graph g;  // keeps every descriptor alive
  cudnnBackendDescriptor_t plan{};
  int64_t workspace = 0;
  int64_t engine = -1;
  bool with_accumulator = false;  // the backward's fp32 dQ accumulator (non-deterministic graph)
};

std::mutex plans_mu;
using PlanKey = std::tuple<int, bool, bool, SdpaDims>;
std::map<PlanKey, std::unique_ptr<Plan>> plans;
PlanKey key_of(Dir dir, const SdpaDims& s, int64_t shift) {
  return {static_cast<int>(dir), g_deterministic.load(), shift != 0, s};
}

Plan& plan_for(Dir dir, const SdpaDims& s, int64_t shift) {
  std::lock_guard<std::mutex> lock(plans_mu);
  const auto key = key_of(dir, s, shift);
  const bool det = std::get<1>(key);
  auto it = plans.find(key);
  if (it != plans.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  p->with_accumulator = dir == Dir::bwd && !det;
  build(p->g, dir, s, det, shift != 0);
  cudnnHandle_t h = handle();
  auto graph = p->g.finish(h);
  std::vector<Config> info;
  auto cfgs = heuristics(p->g, graph, nullptr, &info);
  std::string why = "no configuration offered";
  for (size_t i = 0; i < cfgs.size() && !p->plan; ++i) {
    if (det && !info[i].deterministic) continue;  // bitwise reruns are part of the contract
    auto& pl = p->g.keep(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    pl.set(kPlanHandle, CUDNN_TYPE_HANDLE, &h)
        .set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, &cfgs[i]);
    auto st = cudnnBackendFinalize(pl.get());
    if (st != CUDNN_STATUS_SUCCESS) {
      why = cudnnGetErrorString(st);
      continue;
    }
    p->plan = pl.get();
    p->engine = info[i].engine;
    int64_t cnt = 0;
    check(cudnnBackendGetAttribute(p->plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                   CUDNN_TYPE_INT64, 1, &cnt, &p->workspace),
          "plan workspace size");
  }
  if (!p->plan)
    fail("cuDNN SDPA ", dir == Dir::fwd ? "forward" : "backward", " (hq=", s.hq, " hk=", s.hk,
         " d=", s.d, " sq=", s.sq, " skv=", s.skv, "): no ", det ? "deterministic " : "",
         "plan finalized (", why, ", ", cfgs.size(), " configurations)");
  auto& ref = *p;
  plans.emplace(key, std::move(p));
  return ref;
}

void execute(Plan& p, const std::vector<int64_t>& uids, const std::vector<void*>& ptrs) {
  DBuf<char> ws(std::max<int64_t>(p.workspace, 1), Cat::workspace);
  Desc vp(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  void* w = ws.get();
  vp.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, uids.data(),
         static_cast<int64_t>(uids.size()))
      .set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, ptrs.data(),
           static_cast<int64_t>(ptrs.size()))
      .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, &w)
      .finalize("variant pack");
  check(cudnnBackendExecute(handle(), p.plan, vp.get()), "execute");
}

}  // namespace

std::string device_properties_json() {
  Desc dp(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR);
  cudnnHandle_t h = handle();
  dp.set(CUDNN_ATTR_DEVICEPROP_HANDLE, CUDNN_TYPE_HANDLE, &h).finalize("device properties");
  int64_t n = 0;
  check(cudnnBackendGetAttribute(dp.get(), CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION,
                                 CUDNN_TYPE_CHAR, 0, &n, nullptr),
        "device properties size");
  std::string json(static_cast<size_t>(n), '\0');
  int64_t got = 0;
  check(cudnnBackendGetAttribute(dp.get(), CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION,
                                 CUDNN_TYPE_CHAR, n, &got, json.data()),
        "device properties JSON");
  json.resize(static_cast<size_t>(got));
  while (!json.empty() && json.back() == '\0') json.pop_back();
  return json;
}

void sdpa_fwd(void* o, float* lse, const void* q, const void* k, const void* v, const SdpaDims& s,
              float scale, int64_t shift) {
  Plan& p = plan_for(Dir::fwd, s, shift);
  if (shift < std::numeric_limits<int32_t>::min() || shift > std::numeric_limits<int32_t>::max())
    fail("cuDNN SDPA: shift ", shift, " does not fit int32");
  int32_t sh = static_cast<int32_t>(shift);
  float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<int64_t> uids = {kQ, kK, kV, kO, kStats, kScale, kNegInf};
  std::vector<void*> ptrs = {
      const_cast<void*>(q), const_cast<void*>(k), const_cast<void*>(v), o, lse, &scale, &neg_inf};
  if (shift) uids.push_back(kShift), ptrs.push_back(&sh);
  execute(p, uids, ptrs);
}

void sdpa_bwd(void* dq, void* dk, void* dv, const void* dout, const void* q, const void* k,
              const void* v, const void* o, const float* lse, const SdpaDims& s, float scale,
              int64_t shift) {
  Plan& p = plan_for(Dir::bwd, s, shift);
  if (shift < std::numeric_limits<int32_t>::min() || shift > std::numeric_limits<int32_t>::max())
    fail("cuDNN SDPA: shift ", shift, " does not fit int32");
  int32_t sh = static_cast<int32_t>(shift);
  float neg_inf = -std::numeric_limits<float>::infinity(), one = 1.0f;
  DBuf<float> dsum(s.hq * s.sq, Cat::workspace);
  std::vector<int64_t> uids = {kQ,  kK,     kV,     kO,      kDO,  kDQ,        kDK,
                               kDV, kStats, kScale, kNegInf, kOne, kSoftmaxSum};
  std::vector<void*> ptrs = {const_cast<void*>(q),
                             const_cast<void*>(k),
                             const_cast<void*>(v),
                             const_cast<void*>(o),
                             const_cast<void*>(dout),
                             dq,
                             dk,
                             dv,
                             const_cast<float*>(lse),
                             &scale,
                             &neg_inf,
                             &one,
                             dsum.get()};
  if (shift) uids.push_back(kShift), ptrs.push_back(&sh);
  DBuf<float> acc;
  if (p.with_accumulator) {
    acc = DBuf<float>(s.hq * s.sq * s.d, Cat::workspace);
    ORIGAMI_CUDA_CHECK(cudaMemsetAsync(acc.get(), 0, acc.size() * sizeof(float), current_stream()));
    uids.push_back(kDQAccum);
    ptrs.push_back(acc.get());
  }
  execute(p, uids, ptrs);
}

std::vector<Call> plan_calls(const QSeg& q, const int64_t* kv_pos0, const int64_t* kv_len,
                             int nks) {
  std::vector<Call> calls;
  const int64_t last = q.pos0 + q.len - 1;  // position of the segment's last row
  for (int j = 0; j < nks; ++j) {
    const int64_t r0 = std::max<int64_t>(0, kv_pos0[j] - q.pos0);  // first row that sees key 0
    if (r0 >= q.len || kv_len[j] <= 0) continue;
    const int64_t keys = std::min(kv_len[j], last - kv_pos0[j] + 1);
    calls.push_back({j, r0, q.len - r0, keys, q.pos0 + r0 - kv_pos0[j]});
  }
  return calls;
}

void set_deterministic(bool on) {
  g_deterministic = on;
}

int64_t engine_of(Dir dir, const SdpaDims& s, int64_t shift) {
  std::lock_guard<std::mutex> lock(plans_mu);
  auto it = plans.find(key_of(dir, s, shift));
  return it == plans.end() ? -1 : it->second->engine;
}

int64_t plans_cached() {
  std::lock_guard<std::mutex> lock(plans_mu);
  return static_cast<int64_t>(plans.size());
}

}  // namespace origami::cuda::cudnn
