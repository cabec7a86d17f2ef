// What a kernel-mode copy into user memory costs on this machine, against a user-mode copy of the
// same bytes, in the same run. Open MPI's shared-memory transport receives a large message with
// one such copy (CMA: process_vm_readv into the receiver's buffer); on the VMs here its first write
// to a page since the process's memory map last changed costs ~4.5 us more than a later one (the
// hypervisor maps the page for the kernel's access then), so such a receive runs at ~1 GB/s.
//
//   bench_first_touch [--pool-mib 256] [--evict-mib 2048]
//
// Rows: process_vm_readv of 8 MiB pieces into a pool (written once by the program) the first
// time, again, after faulting in and freeing --evict-mib of fresh memory elsewhere, and again;
// then memcpy the same way into a pool of its own.
#include <sys/uio.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kPiece = size_t{8} << 20;

// Milliseconds per 8 MiB piece, copying src into every piece of pool once.
double pass(std::vector<char>& pool, const std::vector<char>& src, bool kernel) {
  double total = 0;
  int n = 0;
  for (size_t off = 0; off + kPiece <= pool.size(); off += kPiece, ++n) {
    const auto t0 = Clock::now();
    if (kernel) {
      iovec local{pool.data() + off, kPiece};
      iovec remote{const_cast<char*>(src.data()), kPiece};
      if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != static_cast<ssize_t>(kPiece)) {
        std::perror("process_vm_readv");
        std::exit(1);
      }
    } else {
      std::memcpy(pool.data() + off, src.data(), kPiece);
    }
    total += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  return 1e3 * total / n;
}

}  // namespace

int main(int argc, char** argv) {
  size_t pool_mib = 256, evict_mib = 2048;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--pool-mib")
      pool_mib = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--evict-mib")
      evict_mib = std::strtoull(argv[i + 1], nullptr, 10);
    else {
      std::fprintf(stderr, "usage: bench_first_touch [--pool-mib N] [--evict-mib N]\n");
      return 2;
    }
  }
  if (pool_mib < 8) {
    std::fprintf(stderr, "--pool-mib must be >= 8\n");
    return 2;
  }
  utsname u{};
  uname(&u);
  std::printf("bench_first_touch: %s %s, pool %zu MiB, evict %zu MiB; ms per 8 MiB piece\n",
              u.nodename, u.release, pool_mib, evict_mib);
  std::vector<char> src(kPiece, 5);
  std::printf("| copy | first | again | after faulting in %zu MiB elsewhere | again |\n",
              evict_mib);
  std::printf("|---|---|---|---|---|\n");
  for (const bool kernel : {true, false}) {
    std::vector<char> pool(pool_mib << 20, 1);  // written once by this program
    const double first = pass(pool, src, kernel), again = pass(pool, src, kernel);
    {
      std::vector<char> evict(evict_mib << 20, 1);  // fresh pages, faulted in, then freed
    }
    const double after = pass(pool, src, kernel);
    const double again2 = pass(pool, src, kernel);
    std::printf("| %s | %.2f | %.2f | %.2f | %.2f |\n",
                kernel ? "kernel (process_vm_readv, CMA)" : "user (memcpy)", first, again, after,
                again2);
  }
  return 0;
}
