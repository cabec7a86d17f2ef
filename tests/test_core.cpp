// Core pieces: the tracked allocator, safetensors (round trip and every malformed input),
// config validation, the counter-based RNG, the LR schedule and checkpoints.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "comm/sim_comm.h"
#include "core/device.h"
#include "core/memory.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "core/trace.h"
#include "error_of.h"
#include "infer/decoder.h"
#include "infer/sample.h"
#include "io/checkpoint.h"
#include "kernels/dispatch.h"
#include "kernels/emu.h"
#include "model/config.h"
#include "model/params.h"
#include "train/trainer.h"

using namespace origami;
namespace fs = std::filesystem;

// Every operator new of this test binary, counted (Trace below). (g++ takes the free() in the
// replacement operator delete for a mismatch with operator new: it is this file's malloc.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
static std::atomic<int64_t> g_news{0};
void* operator new(size_t n) {
  ++g_news;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  std::free(p);
}
#pragma GCC diagnostic pop

namespace {
std::string tmpdir() {
  auto p = fs::temp_directory_path() / ("origami_test_core_" + std::to_string(::getpid()));
  fs::create_directories(p);
  return p.string();
}
void write_bytes(const std::string& path, const std::string& b) {
  std::ofstream(path, std::ios::binary) << b;
}
std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
using test::error_of;
nlohmann::json base_config() {
  return {{"hidden_size", 32},        {"intermediate_size", 64}, {"num_attention_heads", 4},
          {"num_key_value_heads", 2}, {"num_hidden_layers", 2},  {"vocab_size", 50}};
}
}  // namespace

TEST(Memory, TracksLiveAndPeakPerCategoryAndTotalAsPeakOfSum) {
  MemTracker& t = MemTracker::get();
  t.reset_peaks();
  const MemStats s0 = t.stats();
  {
    Tensor a = Tensor::empty({1000}, DType::f32, Cat::activations);  // 4000 B
    {
      Tensor w = Tensor::empty({10, 10}, DType::f64, Cat::workspace);  // 800 B
    }
    Tensor g = Tensor::empty({250}, DType::f32, Cat::grads);  // 1000 B
    const MemStats s = t.stats();
    EXPECT_EQ(s.live[3] - s0.live[3], 4000);
    EXPECT_EQ(s.peak[4] - s0.live[4], 800);
    EXPECT_EQ(s.total_live - s0.total_live, 5000);
    // total peak = max over time of the sum (4800 then 5000), not the sum of peaks (5800)
    EXPECT_EQ(s.total_peak - s0.total_live, 5000);
  }
  EXPECT_EQ(t.stats().total_live, s0.total_live);
}

// A traced step repeats the same span names; recording them must not leave a small allocation
// per span on the heap (between the steps' large tensors they split its free blocks, and a traced
// tsp=2 step ran 2x slower, RSS growing every step).
TEST(Trace, RepeatedSpansAllocateNothingOnceTheirNamesAreKnown) {
  Trace& t = Trace::get();
  t.enable();
  const size_t before = t.events();
  auto name = [](int i) { return "attention bwd head group " + std::to_string(i % 40); };
  for (int i = 0; i < 1000; ++i) t.span(name(i), i % 2, i, i + 1.0, i % 3 ? -1 : i);
  std::vector<std::string> names;
  for (int i = 0; i < 40; ++i) names.push_back(name(i));
  const int64_t news = g_news;
  for (int i = 0; i < 50000; ++i) t.span(names[static_cast<size_t>(i % 40)], 0, i, i + 2.0);
  // (one more block of events at most, if the 1000 above ended one)
  EXPECT_LE(g_news - news, 1) << "allocations by 50000 spans of 40 known names";
  EXPECT_EQ(t.events(), before + 51000);
  const std::string js = t.events_json(3);
  EXPECT_NE(js.find("\"name\":\"attention bwd head group 39\""), std::string::npos);
  EXPECT_NE(js.find("\"args\":{\"bytes\":999}"), std::string::npos);
}

TEST(SafeTensors, RoundTripAndMalformedInputs) {
  const std::string dir = tmpdir(), path = dir + "/a.safetensors";
  Tensor a = Tensor::empty({2, 3}, DType::f32, Cat::weights);
  for (int i = 0; i < 6; ++i) a.data<float>()[i] = 0.5f * i;
  std::vector<int64_t> ids = {1, 2, 3};
  SafeTensorsWriter w;
  w.add("a", a);
  w.add("ids", DType::i64, {3}, ids.data());
  w.write(path);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  {
    SafeTensorsReader r(path);
    Tensor b = Tensor::empty({2, 3}, DType::f32, Cat::weights);
    r.read_into("a", b);
    for (int i = 0; i < 6; ++i) EXPECT_EQ(b.data<float>()[i], 0.5f * i);
    std::vector<int64_t> sh;
    EXPECT_EQ(r.load_ints("ids", &sh), ids);
    Tensor wrong = Tensor::empty({3, 2}, DType::f32, Cat::weights);
    EXPECT_NE(error_of([&] { r.read_into("a", wrong); }).find("has shape [2, 3], expected [3, 2]"),
              std::string::npos);
    EXPECT_NE(error_of([&] { r.get("nope"); }).find("missing tensor 'nope'"), std::string::npos);
  }
  const std::string good = read_bytes(path), bad = dir + "/bad.safetensors";
  write_bytes(bad, good.substr(0, good.size() - 4));
  EXPECT_NE(error_of([&] { SafeTensorsReader r(bad); }).find("outside the data section"),
            std::string::npos);
  write_bytes(bad, good.substr(0, 5));
  EXPECT_NE(error_of([&] { SafeTensorsReader r(bad); }).find("truncated"), std::string::npos);
  std::string huge = good;
  huge[6] = 0x7f;  // header length beyond the file
  write_bytes(bad, huge);
  EXPECT_NE(error_of([&] { SafeTensorsReader r(bad); }).find("exceeds the file"),
            std::string::npos);
  std::string notjson = good;
  notjson[8] = '#';
  write_bytes(bad, notjson);
  EXPECT_NE(error_of([&] { SafeTensorsReader r(bad); }).find("not JSON"), std::string::npos);
  std::string dt = good;
  dt.replace(dt.find("\"F32\""), 5, "\"F16\"");
  write_bytes(bad, dt);
  EXPECT_NE(error_of([&] { SafeTensorsReader r(bad); }).find("unsupported dtype"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(Config, ValidationNamesTheFieldAndTheConstraint) {
  EXPECT_EQ(ModelConfig::from_json(base_config(), "c").head_dim(), 8);
  auto err = [](nlohmann::json j) {
    return error_of([&] { ModelConfig::from_json(j, "c.json"); });
  };
  auto j = base_config();
  j.erase("hidden_size");
  EXPECT_EQ(err(j), "c.json: missing required field 'hidden_size'");
  j = base_config();
  j["num_hidden_layers"] = "2";
  EXPECT_EQ(err(j), "c.json: field 'num_hidden_layers' must be an integer, got \"2\"");
  j = base_config();
  j["num_key_value_heads"] = 3;
  EXPECT_EQ(err(j), "c.json: num_attention_heads=4 is not divisible by num_key_value_heads=3");
  j = base_config();
  j["hidden_size"] = 30;
  EXPECT_EQ(err(j), "c.json: hidden_size=30 is not divisible by num_attention_heads=4");
  j = base_config();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_NE(err(j).find("'rope_scaling' is not supported"), std::string::npos);
  j = base_config();
  j["head_dim"] = 16;
  EXPECT_NE(err(j).find("head_dim=16 differs"), std::string::npos);
  j = base_config();
  j["attention_bias"] = true;
  EXPECT_NE(err(j).find("'attention_bias'=true is not supported"), std::string::npos);
  j = base_config();
  j["hidden_size"] = 12;
  j["num_attention_heads"] = 4;  // head_dim 3: odd
  EXPECT_NE(err(j).find("must be even"), std::string::npos);
  j = base_config();
  j["tie_word_embeddings"] = 1;
  EXPECT_NE(err(j).find("'tie_word_embeddings' must be true or false"), std::string::npos);
}

TEST(Rng, CounterBasedAndKeyedByName) {
  const uint64_t k1 = param_key(1, "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(rng_normal(k1, 12345),
            rng_normal(param_key(1, "model.layers.0.mlp.up_proj.weight"), 12345));
  EXPECT_NE(rng_normal(k1, 0), rng_normal(param_key(1, "model.layers.1.mlp.up_proj.weight"), 0));
  EXPECT_NE(rng_normal(k1, 0), rng_normal(param_key(2, "model.layers.0.mlp.up_proj.weight"), 0));
  double s = 0, s2 = 0;
  for (int i = 0; i < 100000; ++i) {
    const double x = rng_normal(k1, i);
    s += x;
    s2 += x * x;
  }
  EXPECT_NEAR(s / 1e5, 0.0, 0.02);
  EXPECT_NEAR(s2 / 1e5, 1.0, 0.02);
  EXPECT_EQ(synthetic_token(3, 10, 5, 1000), synthetic_token(3, 10, 5, 1000));
}

TEST(Schedule, WarmupThenCosineToMinLr) {
  TrainOptions o;
  o.lr = 1.0;
  o.min_lr = 0.1;
  o.steps = 110;
  o.warmup = 10;
  EXPECT_DOUBLE_EQ(lr_at(o, 0), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(o, 9), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(o, 10), 1.0);
  EXPECT_NEAR(lr_at(o, 60), 0.55, 1e-12);
  EXPECT_NEAR(lr_at(o, 109), 0.1, 1e-3);
}

TEST(Checkpoint, RoundTripAndCorruptionDetected) {
  const std::string dir = tmpdir() + "/ckpt";
  const ModelConfig c = ModelConfig::from_json(base_config(), "c");
  ModelParams p = ModelParams::zeros(c, Cat::weights), m = ModelParams::zeros(c, Cat::optimizer),
              v = ModelParams::zeros(c, Cat::optimizer);
  init_params(p, 7);
  init_params(m, 8);
  init_params(v, 9);
  TrainerState st;
  st.step = 3;
  st.consumed_samples = 12;
  st.extra = {{"seed", 7}};
  save_checkpoint(dir, st, p, m, v);
  EXPECT_TRUE(fs::exists(dir + "/step_3/trainer.json"));
  EXPECT_FALSE(fs::exists(dir + "/step_3.tmp"));
  EXPECT_EQ(read_bytes(dir + "/latest"), "step_3\n");
  bool same = false;
  auto read = [&](const ModelParams& P, const ModelParams&, const ModelParams& V) {
    same =
        !std::memcmp(p.layers[1].w_up.raw(), P.layers[1].w_up.raw(), p.layers[1].w_up.nbytes()) &&
        !std::memcmp(v.embed.raw(), V.embed.raw(), v.embed.nbytes());
  };
  TrainerState st2 = read_checkpoint(dir, c, read);
  EXPECT_EQ(st2.step, 3);
  EXPECT_EQ(st2.consumed_samples, 12);
  EXPECT_TRUE(same);
  std::string b = read_bytes(dir + "/step_3/model.safetensors");
  b[b.size() - 1] ^= 1;
  write_bytes(dir + "/step_3/model.safetensors", b);
  EXPECT_NE(error_of([&] { read_checkpoint(dir, c, read); }).find("sha256 mismatch"),
            std::string::npos);
  fs::remove_all(fs::path(dir).parent_path());
}

// Inference bookkeeping (infer/decoder.h): where the prefill leaves the positions, the rebalance,
// the caching rank of each decode position, and the slots a rank needs.
TEST(InferCache, PrefillCountsRebalanceOwnersCapacity) {
  using namespace origami::infer;
  // S = 14, D = 4: padded to 16, chunks of 2; rank 0 holds [0, 2) and the padding [14, 16).
  EXPECT_EQ(prefill_counts(14, 4), (std::vector<int64_t>{2, 4, 4, 4}));
  EXPECT_EQ(balanced_counts({2, 4, 4, 4}), (std::vector<int64_t>{3, 4, 4, 3}));
  EXPECT_EQ(prefill_counts(16, 4), (std::vector<int64_t>{4, 4, 4, 4}));
  EXPECT_EQ(prefill_counts(1, 2), (std::vector<int64_t>{1, 0}));
  // Balanced: round-robin from p mod D; otherwise the least loaded.
  EXPECT_EQ(owner_of({4, 4, 4, 4}, 16), 0);
  EXPECT_EQ(owner_of({4, 4, 4, 4}, 17), 1);
  EXPECT_EQ(owner_of({5, 4, 4, 4}, 16), 1);
  EXPECT_EQ(owner_of({5, 5, 4, 5}, 16), 2);
  // Every rank stays within one position of n/D while decoding, and the capacity covers both
  // the prefill's own rows and the final count.
  for (int D : {1, 2, 3, 4, 8})
    for (int64_t S : {1, 5, 14, 16, 33})
      for (int64_t n : {1, 7, 40}) {
        auto c = balanced_counts(prefill_counts(S, D));
        int64_t most = 0;
        for (int64_t p = S; p < S + n; ++p) {
          ++c[static_cast<size_t>(owner_of(c, p))];
          const auto [lo, hi] = std::minmax_element(c.begin(), c.end());
          EXPECT_LE(*hi - *lo, 1) << "D=" << D << " S=" << S << " p=" << p;
          most = std::max(most, *hi);
        }
        const auto pre = prefill_counts(S, D);
        EXPECT_GE(cache_capacity(S, n, D),
                  std::max(most, *std::max_element(pre.begin(), pre.end())));
      }
}

// Sampling: greedy takes the first maximum; a seeded draw is a pure function of the logits and
// (seed, sequence, step); top-k 1 is greedy; bad values name their flag.
TEST(InferSample, GreedySeededTopK) {
  using namespace origami::infer;
  const std::vector<float> z = {0.5f, 2.0f, 2.0f, -1.0f, 1.5f};
  Sampling g;
  EXPECT_EQ(sample(z.data(), 5, g, 0, 0), 1);
  Sampling s;
  s.temperature = 1.0, s.seed = 9;
  std::vector<int64_t> a, b;
  for (int t = 0; t < 50; ++t) a.push_back(sample(z.data(), 5, s, 1, t));
  for (int t = 0; t < 50; ++t) b.push_back(sample(z.data(), 5, s, 1, t));
  EXPECT_EQ(a, b);
  EXPECT_NE(std::count(a.begin(), a.end(), a[0]), 50);  // it does sample
  s.top_k = 1;
  for (int t = 0; t < 20; ++t) EXPECT_EQ(sample(z.data(), 5, s, 0, t), 1);
  s.top_k = 0, s.top_p = 0.0;
  EXPECT_NE(error_of([&] { validate(s); }).find("--top-p=0"), std::string::npos);
}

// The emulated device (kernels/emu.h) is only a check if its memory really faults on a host touch
// and its seam (copies, zeroing, kernel table) really reaches the memory behind the tag.
TEST(EmulatedDevice, HostTouchFaultsAndTheSeamWorks) {
  // Death tests re-execute the binary: a forked child of a process whose OpenMP pool exists
  // (earlier tests) would hang in the kernels' parallel regions.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const auto before = MemTracker::device().stats().total_live;
  emu::use_emulated_device();
  {
    Tensor a = Tensor::empty({4, 3}, DType::f32, Cat::workspace);
    Tensor b = Tensor::zeros({3, 2}, DType::f32, Cat::workspace);
    Tensor c = Tensor::empty({4, 2}, DType::f32, Cat::workspace);
    EXPECT_TRUE(a.on_device());
    EXPECT_NE(a.raw(), emu::real(a.raw()));
    EXPECT_EQ(MemTracker::device().stats().total_live - before, (12 + 6 + 8) * 4);
    EXPECT_DEATH(a.data<float>()[0] = 1.f, "");
    EXPECT_DEATH(std::printf("%f\n", b.data<float>()[5]), "");
    std::vector<float> ha(12), hc(8, -1.f);
    for (int i = 0; i < 12; ++i) ha[i] = static_cast<float>(i);
    copy_bytes(a.raw(), ha.data(), 48);
    // W = [[1, 0, 0], [0, 2, 0]]: two entries copied in, the rest zero from zeros().
    const float one = 1.f, two = 2.f;
    copy_bytes(b.raw(), &one, 4);
    copy_bytes(static_cast<char*>(b.raw()) + 16, &two, 4);
    k::linear_fwd<float>(c.data<float>(), a.data<float>(), b.data<float>(), 4, 2, 3);
    copy_bytes(hc.data(), c.raw(), 32);
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(hc[r * 2], ha[r * 3]) << r;
      EXPECT_EQ(hc[r * 2 + 1], 2.f * ha[r * 3 + 1]) << r;
    }
    // A kernel handed host memory for a tensor (a GPU's illegal address) is refused.
    EXPECT_THROW(k::linear_fwd<float>(hc.data(), a.data<float>(), b.data<float>(), 4, 2, 3), Error);
    // Overrunning a tensor reaches the guard page behind it.
    EXPECT_DEATH(k::add_inplace<float>(c.data<float>(), a.data<float>(), 12), "");
  }
  EXPECT_EQ(MemTracker::device().stats().total_live, before);
  use_device(nullptr);
  k::install(nullptr);
}

// The dry run's communicators (comm/sim_comm.h): ranks as threads; host data arrives as MPI's
// would (sums in rank order, blocks in rank order), records follow the direct algorithm and the
// fixed-order reductions hold MpiComm's scratch (comm/direct.h) until the request is dropped.
TEST(SimComm, ThreadsExchangeHostDataAndRecordTheDirectBytes) {
  constexpr int D = 3;
  auto comms = make_sim_comms(D, 10);
  std::vector<MemTracker> trackers(D);
  std::vector<std::vector<int64_t>> gathered(D), alltoall(D), p2p(D);
  std::vector<std::vector<double>> reduced(D), scattered(D);
  std::vector<int64_t> comm_peak(D);
  std::vector<std::thread> threads;
  for (int r = 0; r < D; ++r)
    threads.emplace_back([&, r] {
      ThreadTracker tt(trackers[r]);
      Comm& c = *comms[r];
      std::vector<int64_t> mine{10 * r, 10 * r + 1};
      gathered[r].resize(2 * D);
      c.iallgather(mine.data(), gathered[r].data(), 16, Traffic::other).wait();
      std::vector<double> x{0.1 * (r + 1), 1.0 + r};
      c.iallreduce(x.data(), 2, Traffic::grads).wait();
      reduced[r] = x;
      std::vector<float> blocks(D * 2), own(2);
      for (int q = 0; q < D; ++q) blocks[2 * q] = blocks[2 * q + 1] = static_cast<float>(r + q);
      {
        Request rs = c.ireduce_scatter(blocks.data(), own.data(), 2, Traffic::kv);
        rs.wait();
        comm_peak[r] = trackers[r].stats().live[static_cast<int>(Cat::comm)];  // scratch alive
      }
      scattered[r] = {own[0], own[1]};
      // all-to-all-v: rank r sends q+1 values r*100+q to rank q
      std::vector<int64_t> send, sb(D), so(D), rb(D), ro(D);
      for (int q = 0, o = 0; q < D; ++q) {
        sb[q] = 8 * (q + 1), so[q] = o, o += sb[q];
        for (int i = 0; i <= q; ++i) send.push_back(r * 100 + q);
      }
      for (int q = 0, o = 0; q < D; ++q) rb[q] = 8 * (r + 1), ro[q] = o, o += rb[q];
      alltoall[r].resize(static_cast<size_t>(D * (r + 1)));
      c.ialltoallv(send.data(), sb.data(), so.data(), alltoall[r].data(), rb.data(), ro.data(),
                   Traffic::embed_head)
          .wait();
      // a ring step: send to r+1, receive from r-1, posted as one group
      int64_t out = 7 * r, in = -1;
      c.begin_group();
      Request s = c.isend(&out, 8, (r + 1) % D, 3, Traffic::mlp_weights);
      Request q = c.irecv(&in, 8, (r + D - 1) % D, 3, Traffic::mlp_weights);
      c.end_group();
      s.wait();
      q.wait();
      p2p[r] = {in};
      c.barrier();
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < D; ++r) {
    for (int q = 0; q < D; ++q) {
      EXPECT_EQ(gathered[r][2 * q], 10 * q);
      EXPECT_EQ(gathered[r][2 * q + 1], 10 * q + 1);
      for (int i = 0; i < r + 1; ++i) EXPECT_EQ(alltoall[r][q * (r + 1) + i], q * 100 + r);
    }
    EXPECT_EQ(reduced[r][0], (0.1 * 1 + 0.1 * 2) + 0.1 * 3);  // rank order, as MpiComm
    EXPECT_EQ(reduced[r][1], 6.0);
    EXPECT_EQ(scattered[r][0], static_cast<float>(3 * r + 3));  // Σ_q (q + r)
    EXPECT_EQ(p2p[r][0], 7 * ((r + D - 1) % D));
    EXPECT_EQ(comm_peak[r], (D - 1) * 2 * 4);  // the reduce-scatter's received blocks
    EXPECT_EQ(trackers[r].stats().live[static_cast<int>(Cat::comm)], 0);  // freed with the request
    const auto& rec = comms[r]->records();
    ASSERT_EQ(rec.size(), 6u);
    EXPECT_EQ(rec[0].bytes, (D - 1) * 16);           // all-gather: (D-1)·block
    EXPECT_EQ(rec[1].bytes, 2 * (D - 1) * 16 / D);   // all-reduce: 2(D-1)·M/D
    EXPECT_EQ(rec[2].bytes, (D - 1) * 8);            // reduce-scatter: (D-1)·own block
    EXPECT_EQ(rec[3].bytes, (D - 1) * 8 * (r + 1));  // all-to-all-v: from the others
    EXPECT_EQ(rec[4].bytes, 0);                      // send: at the receiver
    EXPECT_EQ(rec[5].bytes, 8);                      // receive
  }
}
