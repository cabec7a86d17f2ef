// `origami data`: pre-tokenized datasets (train/dataset.h). `data prepare` tokenizes text and
// JSON-lines files into a dataset directory; `data info` describes one (and checks it).
#pragma once

namespace origami {
int cmd_data(int argc, char** argv);
}
