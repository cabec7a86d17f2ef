// Summaries of a rank's communication records for reports (tsp-spec §10): bytes by category and
// phase, per layer, and for the embedding, the LM head and once-per-step traffic.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comm/comm.h"

namespace origami {

nlohmann::json comm_summary(const std::vector<CommRecord>& recs, int num_layers);
// Rank 0 receives every rank's string (in rank order); other ranks get an empty vector. Without
// MPI, the one string.
std::vector<std::string> gather_to_root(const std::string& s);

}  // namespace origami
