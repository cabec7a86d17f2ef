// `origami bench`: the same model, global batch and sequence length under several layouts in one
// invocation, each its own mpirun job of `origami train --synthetic`, into one table.
#pragma once

namespace origami {
int cmd_bench(int argc, char** argv);
}
