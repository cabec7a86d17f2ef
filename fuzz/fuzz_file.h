// The fuzz targets' input as a file (the readers map files): written to a per-process temporary
// file, removed when done.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace origami::fuzz {

class TempFile {
 public:
  TempFile(const uint8_t* data, size_t size)
      : path_("/tmp/origami-fuzz-" + std::to_string(::getpid()) + ".bin") {
    FILE* f = std::fopen(path_.c_str(), "wb");
    if (f) {
      if (size) std::fwrite(data, 1, size, f);
      std::fclose(f);
    }
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace origami::fuzz
