// cuDNN SDPA (bf16) through the segment contract of flash_attn_fwd/bwd: the zigzag-like case of the
// parity tests (one call written in place, three calls merged by log-sum-exp, a key segment that
// starts inside a query chunk), GQA, head dims 64 and 128, against the CPU fp32 kernels on the
// rounded inputs (≤ 1e-2 norm-wise), a bitwise rerun, and plans reused at a known shape.
#include "attention_case.h"
#include "cuda/cudnn_sdpa.h"

namespace origami::cuda::test {
namespace {

TEST(GpuSdpa, ZigzagThreeKeySegmentsMha) {
  attention_case<bf16>({4, 4, 128, 64, 0, 0}, AttnPath::cudnn);
}
TEST(GpuSdpa, Gqa4HeadDim64) {
  attention_case<bf16>({8, 2, 64, 96, 0, 0}, AttnPath::cudnn);
}
TEST(GpuSdpa, KeySegmentStartsInsideAChunk) {
  attention_case<bf16>({4, 2, 64, 80, 0, 0, 30}, AttnPath::cudnn);
}
TEST(GpuSdpa, PlansAreReused) {
  attention_case<bf16>({4, 4, 128, 64, 0, 0}, AttnPath::cudnn);
  const auto n = cudnn::plans_cached();
  attention_case<bf16>({4, 4, 128, 64, 0, 0}, AttnPath::cudnn);
  EXPECT_EQ(cudnn::plans_cached(), n);
}

// The device description cuDNN reads on this card parses back into a plan (the CI fixture's form).
TEST(GpuSdpa, DevicePropertiesRoundTrip) {
  const std::string json = cudnn::device_properties_json();
  ASSERT_FALSE(json.empty());
  std::printf("deviceprop: %s\n", json.c_str());
  cudnn::SdpaDims s;
  s.hq = s.hk = 4, s.d = 128, s.sq = s.skv = 256, s.q_stride = s.kv_stride = 512,
  s.lse_stride = 256;
  auto r = cudnn::check_plan(cudnn::Dir::bwd, s, json);
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_FALSE(r.engines.empty());
}

}  // namespace
}  // namespace origami::cuda::test
