// `--device cuda`: the process's tensors in device memory and the engines' kernels (the fp32 table
// and, for --dtype bf16, the bf16 one) on the CUDA ones (kernels/dispatch.h; positions and targets, host arrays in the engines' calls, are
// copied over per call). Fails clearly without a device.
#pragma once

namespace origami::cuda {

void use_cuda();

}  // namespace origami::cuda
