// A small declarative flag parser: every flag has a type, a default and a help line, so `--help`
// explains all of them and a bad value names the flag and what it expected.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace origami {

class Args {
 public:
  Args(std::string command, std::string summary)
      : cmd_(std::move(command)), summary_(std::move(summary)) {}
  void flag(const std::string& name, const std::string& def, const std::string& help,
            bool required = false);
  void boolean(const std::string& name, const std::string& help);
  // A flag that may be given several times; list() returns every value in order.
  void repeatable(const std::string& name, const std::string& def, const std::string& help);
  // Returns false if --help was given (help already printed).
  bool parse(int argc, char** argv);
  std::string help() const;

  std::string str(const std::string& name) const;
  int64_t i64(const std::string& name, int64_t min = INT64_MIN) const;
  // Every value of a repeatable flag as an integer >= min.
  std::vector<int64_t> i64_list(const std::string& name, int64_t min = INT64_MIN) const;
  // A finite number (inf and nan are refused, naming the flag).
  double f64(const std::string& name) const;
  // A finite number in [lo, hi] ([lo, hi) with hi_open; hi = inf: no upper bound).
  double f64(const std::string& name, double lo, double hi, bool hi_open = false) const;
  bool on(const std::string& name) const;
  bool given(const std::string& name) const { return given_.count(name) > 0; }
  std::vector<std::string> list(const std::string& name) const;

 private:
  struct Flag {
    std::string def, help;
    bool required = false, is_bool = false, repeat = false;
  };
  std::string cmd_, summary_;
  std::vector<std::string> order_;
  std::map<std::string, Flag> flags_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<std::string>> all_;
  std::map<std::string, bool> given_;
};

}  // namespace origami
