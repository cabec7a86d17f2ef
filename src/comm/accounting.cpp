#include "comm/accounting.h"

#include <mpi.h>

namespace origami {

namespace {
nlohmann::json empty_table() {
  nlohmann::json t;
  for (int c = 0; c < kNumTraffic; ++c)
    t[traffic_name(static_cast<Traffic>(c))] = {{"fwd", 0}, {"recompute", 0}, {"bwd", 0}};
  return t;
}
void add(nlohmann::json& t, const CommRecord& r) {
  auto& v = t[traffic_name(r.cat)][phase_name(r.phase)];
  v = v.get<int64_t>() + r.bytes;
}
}  // namespace

nlohmann::json comm_summary(const std::vector<CommRecord>& recs, int L) {
  nlohmann::json total = empty_table(), embed = empty_table(), head = empty_table(),
                 step = empty_table();
  std::vector<nlohmann::json> layers(static_cast<size_t>(L), empty_table());
  double seconds = 0;
  // Point-to-point bytes received, by category and the peer they came from (the links a
  // transport uses: --mlp-transport ring takes all from r-1, biring half from each neighbour).
  nlohmann::json from_peer = nlohmann::json::object();
  for (const auto& r : recs) {
    add(total, r);
    if (r.peer >= 0 && r.bytes > 0) {
      auto& slot = from_peer[traffic_name(r.cat)][std::to_string(r.peer)];
      slot = (slot.is_null() ? 0 : slot.get<int64_t>()) + r.bytes;
    }
    seconds += r.seconds;
    if (r.where >= 0 && r.where < L)
      add(layers[static_cast<size_t>(r.where)], r);
    else if (r.where == kWhereEmbed)
      add(embed, r);
    else if (r.where == kWhereHead)
      add(head, r);
    else
      add(step, r);
  }
  return {{"comm_bytes", total},       {"comm_bytes_per_layer", layers},
          {"comm_bytes_embed", embed}, {"comm_bytes_head", head},
          {"comm_bytes_step", step},   {"comm_calls", recs.size()},
          {"comm_wall_s", seconds},    {"comm_bytes_from_peer", from_peer}};
}

std::vector<std::string> gather_to_root(const std::string& s) {
  int init = 0;
  MPI_Initialized(&init);
  if (!init) return {s};
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int n = static_cast<int>(s.size());
  std::vector<int> lens(size), offs(size);
  MPI_Gather(&n, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::string all;
  if (rank == 0) {
    int o = 0;
    for (int i = 0; i < size; ++i) offs[i] = o, o += lens[i];
    all.resize(static_cast<size_t>(o));
  }
  MPI_Gatherv(s.data(), n, MPI_CHAR, all.data(), lens.data(), offs.data(), MPI_CHAR, 0,
              MPI_COMM_WORLD);
  std::vector<std::string> out;
  if (rank == 0)
    for (int i = 0; i < size; ++i) out.push_back(all.substr(offs[i], lens[i]));
  return out;
}

}  // namespace origami
