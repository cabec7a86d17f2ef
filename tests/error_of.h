// The message of the origami::Error that f throws (a stand-in when it throws none): the gtest
// files check that errors name the field and the constraint.
#pragma once
#include <string>

#include "core/error.h"

namespace origami::test {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no origami::Error thrown)";
}

}  // namespace origami::test
