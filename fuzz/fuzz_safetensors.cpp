// libFuzzer target: the safetensors reader (core/safetensors.h) on arbitrary bytes. Every input
// must either be refused with origami's Error (a message naming the file) or read: every tensor
// viewed in its own dtype and shape and its bytes touched, integer tensors loaded.
#include <cstdint>
#include <numeric>

#include "core/error.h"
#include "core/safetensors.h"
#include "fuzz/fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const origami::fuzz::TempFile f(data, size);
  try {
    const origami::SafeTensorsReader r(f.path());
    for (const auto& [name, e] : r.entries()) {
      const auto* p = static_cast<const unsigned char*>(e.data);
      volatile unsigned sum = std::accumulate(p, p + e.bytes, 0u);  // touch every byte
      (void)sum;
      if (e.dtype == origami::DType::i32 || e.dtype == origami::DType::i64) {
        std::vector<int64_t> shape;
        (void)r.load_ints(name, &shape);
      }
    }
  } catch (const origami::Error&) {
  }
  return 0;
}
