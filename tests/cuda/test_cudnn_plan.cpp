// cuDNN SDPA graphs planned without a GPU: the forward and backward graphs of cuda/cudnn_sdpa.h
// go through cuDNN's heuristics (mode A) against a device described by JSON, with the toolkit's
// stub driver on the library path (CTest sets it). Heuristics offer only configurations that pass
// their support checks, so a wrong stride, dtype or op order fails here, on every CI run.
// Exits 77 (Skipped) with the reason when the machine has no usable stub or device fixture.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "cuda/cudnn_sdpa.h"

namespace cd = origami::cuda::cudnn;

namespace {

// Device descriptions (cuDNN's DEVICEPROP JSON): the hand-written H100 one, and the H200's as
// cuDNN wrote it on the lent card (tools/gpu_check.sh keeps it). Every graph plans on each.
std::vector<std::pair<std::string, std::string>> g_devices;  // name, JSON
std::string g_json;                                          // the first

cd::SdpaDims dims(int64_t hq, int64_t hk, int64_t d, int64_t sq, int64_t skv) {
  cd::SdpaDims s;
  s.hq = hq, s.hk = hk, s.d = d, s.sq = sq, s.skv = skv;
  s.q_stride = hq * d, s.kv_stride = hk * d, s.lse_stride = sq;
  return s;
}

std::string show(const cd::PlanReport& r) {
  std::ostringstream o;
  o << r.ops << " ops, engines [";
  for (size_t i = 0; i < r.engines.size(); ++i)
    o << (i ? " " : "") << r.engines[i] << (r.deterministic[i] ? "" : "(nondet)");
  o << "]" << (r.error.empty() ? "" : " error: ") << r.error;
  return o.str();
}

// Both directions plan, each with at least one deterministic configuration (what the runtime
// path requires: bitwise reruns).
void expect_plans(const cd::SdpaDims& s) {
  for (const auto& [dev, json] : g_devices)
    for (auto [dir, shifted] : {std::pair{cd::Dir::fwd, true}, std::pair{cd::Dir::bwd, true},
                                std::pair{cd::Dir::fwd, false}, std::pair{cd::Dir::bwd, false}}) {
      auto r = cd::check_plan(dir, s, json, true, shifted);
      SCOPED_TRACE(std::string(dir == cd::Dir::fwd ? "forward " : "backward ") + show(r));
      std::printf("%s %s%s hq=%ld hk=%ld d=%ld sq=%ld skv=%ld: %s\n", dev.c_str(),
                  dir == cd::Dir::fwd ? "fwd" : "bwd", shifted ? " shifted" : "", long(s.hq),
                  long(s.hk), long(s.d), long(s.sq), long(s.skv), show(r).c_str());
      EXPECT_TRUE(r.error.empty());
      ASSERT_FALSE(r.engines.empty());
      bool det = false;
      for (bool b : r.deterministic) det = det || b;
      EXPECT_TRUE(det);
    }
}

}  // namespace

// The shapes of the GPU tests (MHA, GQA, odd lengths, a key range longer than the rows).
TEST(CudnnPlan, TestShapes) {
  expect_plans(dims(4, 4, 64, 128, 128));
  expect_plans(dims(8, 2, 128, 96, 352));
  expect_plans(dims(4, 1, 64, 100, 300));
  expect_plans(dims(4, 2, 32, 40, 80));
}

// Llama-2 7B (32 heads of 128) at D = 8: a rank's call is n_h/D = 4 heads; a zigzag chunk of
// S/(2D) rows against keys [0, c) up to [0, S).
TEST(CudnnPlan, Llama7bShardD8) {
  for (int64_t S : {32768, 131072}) {
    const int64_t c = S / 16;
    expect_plans(dims(4, 4, 128, c, c));
    expect_plans(dims(4, 4, 128, c, S));
  }
}

// Strides the heads do not fill (q rows of a fused qkv buffer) are declared as such.
TEST(CudnnPlan, RowStridesWiderThanHeads) {
  auto s = dims(4, 2, 128, 256, 512);
  s.q_stride = 8 * 128, s.kv_stride = 8 * 128, s.lse_stride = 1024;
  expect_plans(s);
}

// The backward with cuDNN's fp32 dQ accumulator (the faster, non-deterministic form benchmarks
// use).
TEST(CudnnPlan, BackwardWithDqAccumulator) {
  for (auto s : {dims(4, 4, 128, 2048, 32768), dims(8, 2, 64, 96, 352)}) {
    auto r = cd::check_plan(cd::Dir::bwd, s, g_json, false);
    std::printf("bwd (dQ accumulator) hq=%ld sq=%ld skv=%ld: %s\n", long(s.hq), long(s.sq),
                long(s.skv), show(r).c_str());
    EXPECT_TRUE(r.error.empty()) << r.error;
    EXPECT_FALSE(r.engines.empty());
  }
}

// The declared layouts address the element origami stores at row s, head h, column e.
TEST(CudnnLayout, TokenMajorRowsHeadsSideBySide) {
  auto s = dims(8, 2, 64, 10, 30);
  s.q_stride = 8 * 64 + 16, s.kv_stride = 2 * 64 + 8, s.lse_stride = 12;
  auto at = [](const cd::Layout& l, int64_t i1, int64_t i2, int64_t i3) {
    return i1 * l.stride[1] + i2 * l.stride[2] + i3 * l.stride[3];
  };
  const auto q = cd::q_layout(s), kt = cd::kt_layout(s), v = cd::v_layout(s),
             st = cd::stats_layout(s);
  EXPECT_EQ(std::vector<int64_t>(q.dim, q.dim + 4), (std::vector<int64_t>{1, 8, 10, 64}));
  EXPECT_EQ(std::vector<int64_t>(kt.dim, kt.dim + 4), (std::vector<int64_t>{1, 2, 64, 30}));
  EXPECT_EQ(std::vector<int64_t>(v.dim, v.dim + 4), (std::vector<int64_t>{1, 2, 30, 64}));
  EXPECT_EQ(std::vector<int64_t>(st.dim, st.dim + 4), (std::vector<int64_t>{1, 8, 10, 1}));
  for (int64_t h = 0; h < 8; ++h)
    for (int64_t r = 0; r < 10; ++r) {
      for (int64_t e = 0; e < 64; e += 7) EXPECT_EQ(at(q, h, r, e), r * s.q_stride + h * 64 + e);
      EXPECT_EQ(at(st, h, r, 0), h * s.lse_stride + r);
    }
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t j = 0; j < 30; ++j)
      for (int64_t e = 0; e < 64; e += 5) {
        EXPECT_EQ(at(v, h, j, e), j * s.kv_stride + h * 64 + e);
        EXPECT_EQ(at(kt, h, e, j), j * s.kv_stride + h * 64 + e);  // Kᵀ: the same bytes
      }
}

// The call plan of a zigzag rank (D = 2, r = 0, chunk c = 40): its first chunk against keys in
// global order is one call; its second chunk sees three key segments fully or partly.
TEST(CudnnCalls, ZigzagChunksAgainstKeySegments) {
  const int64_t c = 40;
  const int64_t pos[] = {0, c, 3 * c}, len[] = {c, 2 * c, c};
  auto first = cd::plan_calls({0, 0, c}, pos, len, 3);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0], (cd::Call{0, 0, c, c, 0}));
  auto second = cd::plan_calls({c, 3 * c, c}, pos, len, 3);
  ASSERT_EQ(second.size(), 3u);
  EXPECT_EQ(second[0], (cd::Call{0, 0, c, c, 3 * c}));
  EXPECT_EQ(second[1], (cd::Call{1, 0, c, 2 * c, 2 * c}));
  EXPECT_EQ(second[2], (cd::Call{2, 0, c, c, 0}));
  // Keys gathered in global order ([0, 4c) in one buffer): one call per chunk, shift = its start.
  const int64_t gpos[] = {0}, glen[] = {4 * c};
  EXPECT_EQ(cd::plan_calls({c, 3 * c, c}, gpos, glen, 1),
            (std::vector<cd::Call>{{0, 0, c, 4 * c, 3 * c}}));
  EXPECT_EQ(cd::plan_calls({0, 0, c}, gpos, glen, 1), (std::vector<cd::Call>{{0, 0, c, c, 0}}));
}

// A key segment that starts inside the query rows: the rows before it are left out (no fully
// masked row reaches cuDNN), and keys after the last row are trimmed; future segments vanish.
TEST(CudnnCalls, PartialAndFutureSegments) {
  const int64_t pos[] = {0, 30, 200}, len[] = {30, 90, 10};
  auto calls = cd::plan_calls({0, 0, 80}, pos, len, 3);
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0], (cd::Call{0, 0, 80, 30, 0}));
  EXPECT_EQ(calls[1], (cd::Call{1, 30, 50, 50, 0}));
  // Query rows at positions [100, 110) see all of segment 1 (ends at 120? no: trimmed to 110).
  calls = cd::plan_calls({0, 100, 10}, pos, len, 3);
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[1], (cd::Call{1, 0, 10, 80, 70}));
}

TEST(CudnnPlan, BadShapesNameTheField) {
  auto s = dims(6, 4, 128, 64, 64);
  try {
    cd::validate(s);
    FAIL() << "hq=6 over hk=4 accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("hq=6 are not divisible by kv heads hk=4"),
              std::string::npos)
        << e.what();
  }
  s = dims(4, 4, 100, 64, 64);
  EXPECT_THROW(cd::validate(s), std::exception);
  auto r = cd::check_plan(cd::Dir::fwd, s, g_json);
  EXPECT_NE(r.error.find("head_dim=100"), std::string::npos) << r.error;
}

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  // ORIGAMI_DEVICEPROP_JSON: one or more files, separated by ':'.
  const char* env = std::getenv("ORIGAMI_DEVICEPROP_JSON");
  std::stringstream paths(env ? env : "");
  for (std::string path; std::getline(paths, path, ':');) {
    std::ifstream f(path);
    if (!f) {
      std::printf("cannot read device description %s\n", path.c_str());
      return 1;
    }
    std::stringstream ss;
    ss << f.rdbuf();
    auto name = path.substr(path.find_last_of('/') + 1);
    g_devices.emplace_back(name.substr(0, name.find('_')), ss.str());
    std::printf("cuDNN %ld, device JSON %s\n", long(cd::version()), path.c_str());
  }
  if (g_devices.empty()) {
    std::printf("SKIPPED: no device description (ORIGAMI_DEVICEPROP_JSON)\n");
    return 77;
  }
  g_json = g_devices.front().second;
  // A probe: if this cuDNN refuses device-less planning outright (no stub driver), skip with why.
  auto probe = cd::check_plan(cd::Dir::fwd, dims(4, 4, 64, 128, 128), g_json);
  if (!probe.error.empty() && probe.error.find("device properties") != std::string::npos) {
    std::printf("SKIPPED: cuDNN refuses device-less planning here: %s\n", probe.error.c_str());
    return 77;
  }
  return RUN_ALL_TESTS();
}
