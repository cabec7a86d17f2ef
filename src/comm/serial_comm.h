// --no-overlap as a communicator: every operation is complete when its post returns (the point-
// to-point operations of a group when the group ends: a ring step's send waits on the receive
// posted beside it). The schedules post and wait as they always do; under this decorator nothing
// is in flight while they compute, so the time each transfer costs shows as exposed time.
// Results are bitwise those of the overlapped run (reductions keep their fixed order), and the
// records are the inner communicator's, under the context set on this one.
#pragma once
#include <memory>

#include "comm/comm.h"

namespace origami {

std::unique_ptr<Comm> make_serial_comm(std::unique_ptr<Comm> inner);

}  // namespace origami
