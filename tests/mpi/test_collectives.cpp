// Collectives and the zigzag partition, exact: integer-coded data (exact in float), tolerance 0,
// and the bytes each call records (tsp-spec §7 accounting). Run under mpirun with D = 1,2,3,4,8.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdlib>
#include <numeric>
#include <set>
#include <thread>

#include "comm/comm.h"
#include "comm/mpi_comm.h"
#include "parallel/zigzag.h"

using namespace origami;

namespace {
struct Fixture : ::testing::Test {
  std::unique_ptr<Comm> comm = make_mpi_comm();
  int r = comm->rank(), D = comm->size();
  int64_t last_bytes() const { return comm->records().back().bytes; }
};
// value held by rank q at element i
float code(int q, int64_t i) {
  return static_cast<float>(1000 * q + i);
}
}  // namespace

TEST_F(Fixture, BroadcastFromEveryRoot) {
  for (int root = 0; root < D; ++root) {
    std::vector<float> b(37);
    for (int64_t i = 0; i < 37; ++i) b[i] = r == root ? code(root, i) : -1.0f;
    comm->ibcast(b.data(), 37 * 4, root, Traffic::attn_weights).wait();
    for (int64_t i = 0; i < 37; ++i) ASSERT_EQ(b[i], code(root, i));
    EXPECT_EQ(last_bytes(), r == root ? 0 : 37 * 4);
  }
}

TEST_F(Fixture, AllGatherInPlaceAndOutOfPlace) {
  const int64_t m = 5;
  std::vector<float> send(m), recv(D * m, -1.0f);
  for (int64_t i = 0; i < m; ++i) send[i] = code(r, i);
  comm->iallgather(send.data(), recv.data(), m * 4, Traffic::kv).wait();
  for (int q = 0; q < D; ++q)
    for (int64_t i = 0; i < m; ++i) ASSERT_EQ(recv[q * m + i], code(q, i));
  EXPECT_EQ(last_bytes(), (D - 1) * m * 4);
  std::vector<float> inplace(D * m, -1.0f);
  for (int64_t i = 0; i < m; ++i) inplace[r * m + i] = code(r, i);
  comm->iallgather(inplace.data() + r * m, inplace.data(), m * 4, Traffic::kv).wait();
  EXPECT_EQ(inplace, recv);
}

TEST_F(Fixture, ReduceScatterSumsOwnBlock) {
  for (int64_t m : {7, 2500}) {  // 2500: across the sum's blocks of 1024
    std::vector<float> send(D * m), recv(m);
    for (int q = 0; q < D; ++q)
      for (int64_t i = 0; i < m; ++i) send[q * m + i] = code(r, q * m + i);
    comm->ireduce_scatter(send.data(), recv.data(), m, Traffic::kv).wait();
    for (int64_t i = 0; i < m; ++i) {
      float want = 0;
      for (int q = 0; q < D; ++q) want += code(q, r * m + i);
      ASSERT_EQ(recv[i], want);
    }
    EXPECT_EQ(last_bytes(), (D - 1) * m * 4);
  }
}

TEST_F(Fixture, ReduceToEveryRootInPlace) {
  for (int root = 0; root < D; ++root) {
    std::vector<float> b(11);
    for (int64_t i = 0; i < 11; ++i) b[i] = code(r, i);
    comm->ireduce(b.data(), b.data(), 11, root, Traffic::grads).wait();
    if (r == root)
      for (int64_t i = 0; i < 11; ++i) {
        float want = 0;
        for (int q = 0; q < D; ++q) want += code(q, i);
        ASSERT_EQ(b[i], want);
      }
    EXPECT_EQ(last_bytes(), r == root ? (D - 1) * 11 * 4 : 0);
  }
}

TEST_F(Fixture, AllReduceAllTypesAndUnevenSizes) {
  for (int64_t n : {1, 3, 8, 13, 4099}) {  // 4099: blocks longer than the sum's 1024
    std::vector<float> f(n);
    std::vector<double> d(n);
    std::vector<int64_t> k(n);
    for (int64_t i = 0; i < n; ++i)
      f[i] = code(r, i), d[i] = 0.5 * code(r, i), k[i] = int64_t{1} << (r + 20);
    comm->iallreduce(f.data(), n, Traffic::other).wait();
    EXPECT_EQ(last_bytes(), 2 * (D - 1) * n * 4 / D);
    comm->iallreduce(d.data(), n, Traffic::other).wait();
    comm->iallreduce(k.data(), n, Traffic::other).wait();
    for (int64_t i = 0; i < n; ++i) {
      float wf = 0;
      double wd = 0;
      int64_t wk = 0;
      for (int q = 0; q < D; ++q)
        wf += code(q, i), wd += 0.5 * code(q, i), wk += int64_t{1} << (q + 20);
      ASSERT_EQ(f[i], wf);
      ASSERT_EQ(d[i], wd);
      ASSERT_EQ(k[i], wk);
    }
  }
}

TEST_F(Fixture, AllToAllVWithUnevenCounts) {
  // rank r sends (r + q + 1) ints to rank q, valued 100*r + q
  std::vector<int64_t> sb(D), so(D), rb(D), ro(D);
  for (int q = 0; q < D; ++q) sb[q] = 4 * (r + q + 1), rb[q] = 4 * (q + r + 1);
  std::partial_sum(sb.begin(), sb.end() - 1, so.begin() + 1);
  std::partial_sum(rb.begin(), rb.end() - 1, ro.begin() + 1);
  std::vector<int32_t> send((so[D - 1] + sb[D - 1]) / 4), recv((ro[D - 1] + rb[D - 1]) / 4, -1);
  for (int q = 0; q < D; ++q)
    for (int64_t i = 0; i < sb[q] / 4; ++i) send[so[q] / 4 + i] = 100 * r + q;
  comm->ialltoallv(send.data(), sb.data(), so.data(), recv.data(), rb.data(), ro.data(),
                   Traffic::embed_head)
      .wait();
  int64_t in = 0;
  for (int q = 0; q < D; ++q) {
    for (int64_t i = 0; i < rb[q] / 4; ++i) ASSERT_EQ(recv[ro[q] / 4 + i], 100 * q + r);
    if (q != r) in += rb[q];
  }
  EXPECT_EQ(last_bytes(), in);
}

TEST_F(Fixture, RingSendRecvWithProgressAndContext) {
  if (D == 1) GTEST_SKIP() << "no peer";
  std::vector<float> out(1000, static_cast<float>(r)), in(1000, -1.0f);
  comm->set_context(3, Phase::bwd);
  Request s = comm->isend(out.data(), 4000, (r + 1) % D, 7, Traffic::mlp_weights);
  Request q = comm->irecv(in.data(), 4000, (r + D - 1) % D, 7, Traffic::mlp_weights);
  for (int i = 0; i < 100 && !q.test(); ++i) comm->progress();
  s.wait();
  q.wait();
  EXPECT_EQ(in[999], static_cast<float>((r + D - 1) % D));
  const CommRecord& rec = comm->records().back();
  EXPECT_EQ(rec.where, 3);
  EXPECT_EQ(rec.phase, Phase::bwd);
  EXPECT_EQ(rec.cat, Traffic::mlp_weights);
  EXPECT_EQ(rec.bytes, 4000);
  EXPECT_EQ(comm->records()[comm->records().size() - 2].bytes, 0);  // the send records nothing
}

// With the progress thread (ORIGAMI_TEST_PROGRESS_US), a transfer larger than any eager limit
// completes while this thread never calls into the communicator: only test() afterwards.
TEST_F(Fixture, ProgressThreadCompletesTransfersWithoutCalls) {
  if (D == 1 || !std::getenv("ORIGAMI_TEST_PROGRESS_US"))
    GTEST_SKIP() << "needs a peer and the thread";
  const int64_t n = 4 << 20;  // 16 MiB
  std::vector<float> out(n, static_cast<float>(r)), in(n, -1.0f);
  std::vector<float> red(n, 1.0f);
  comm->barrier();
  Request s = comm->isend(out.data(), n * 4, (r + 1) % D, 8, Traffic::mlp_weights);
  Request q = comm->irecv(in.data(), n * 4, (r + D - 1) % D, 8, Traffic::mlp_weights);
  Request a = comm->iallreduce(red.data(), n, Traffic::grads);  // two stages, the second posted
  std::this_thread::sleep_for(std::chrono::seconds(2));         // by the progress thread
  EXPECT_TRUE(q.test());
  EXPECT_TRUE(s.test());
  EXPECT_TRUE(a.test());
  EXPECT_EQ(in[n - 1], static_cast<float>((r + D - 1) % D));
  EXPECT_EQ(red[n - 1], static_cast<float>(D));
}

TEST_F(Fixture, ManyRequestsInFlightCompleteInAnyWaitOrder) {
  std::vector<std::vector<float>> bufs(6, std::vector<float>(64));
  std::vector<Request> reqs;
  for (int k = 0; k < 6; ++k) {
    for (int64_t i = 0; i < 64; ++i) bufs[k][i] = code(r, i + k);
    reqs.push_back(k % 2 ? comm->iallreduce(bufs[k].data(), 64, Traffic::grads)
                         : comm->ibcast(bufs[k].data(), 256, k % D, Traffic::attn_weights));
  }
  for (int k = 5; k >= 0; --k) reqs[k].wait();
  for (int k = 0; k < 6; ++k)
    for (int64_t i = 0; i < 64; ++i) {
      float want = 0;
      if (k % 2)
        for (int q = 0; q < D; ++q) want += code(q, i + k);
      else
        want = code(k % D, i + k);
      ASSERT_EQ(bufs[k][i], want);
    }
}

TEST_F(Fixture, ZigzagPartitionCoversEverythingOnceAndRoundTrips) {
  const int64_t B = 2, S = 8 * D, w = 3;
  Zigzag z{B, S, D, r};
  const auto pos = z.positions();
  ASSERT_EQ(static_cast<int64_t>(pos.size()), B * S / D);
  // every position of a sequence belongs to exactly one rank
  std::vector<int64_t> mine(pos.begin(), pos.begin() + S / D), all(S);
  comm->iallgather(mine.data(), all.data(), 8 * (S / D), Traffic::other).wait();
  std::set<int64_t> s(all.begin(), all.end());
  EXPECT_EQ(static_cast<int64_t>(s.size()), S);
  EXPECT_EQ(*s.rbegin(), S - 1);
  // chunks r and 2D-1-r
  EXPECT_EQ(pos[0], r * (S / (2 * D)));
  EXPECT_EQ(pos[S / (2 * D)], (2 * D - 1 - r) * (S / (2 * D)));
  // shard, gather everyone's shard, unshard: the original back, exactly
  std::vector<float> global(B * S * w), local(B * S / D * w), gathered(D * B * S / D * w),
      back(B * S * w);
  std::iota(global.begin(), global.end(), 0.0f);
  z.shard(local.data(), global.data(), w);
  comm->iallgather(local.data(), gathered.data(), 4 * local.size(), Traffic::other).wait();
  for (int q = 0; q < D; ++q) z.unshard(back.data(), gathered.data() + q * local.size(), w, q);
  EXPECT_EQ(back, global);
}
