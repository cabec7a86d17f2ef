// Errors: one exception type whose message names the field and the constraint.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace origami {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... A>
std::string cat(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}

template <class... A>
[[noreturn]] void fail(const A&... a) {
  throw Error(cat(a...));
}

#define ORIGAMI_CHECK(cond, ...)               \
  do {                                         \
    if (!(cond)) ::origami::fail(__VA_ARGS__); \
  } while (0)

}  // namespace origami
