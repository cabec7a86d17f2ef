// main() of every GPU test executable: exit 77 (CTest: Skipped) when there is no CUDA device, so
// CI machines without a GPU skip instead of failing; otherwise run the gtest cases.
#include <gtest/gtest.h>

#include <cstdio>

#include "cuda/runtime.h"

int main(int argc, char** argv) {
  if (origami::cuda::device_count() == 0) {
    std::printf("SKIPPED: no CUDA device (or no driver) on this machine\n");
    return origami::cuda::kSkipNoDevice;
  }
  std::printf("device: %s\n", origami::cuda::device_summary().c_str());
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
