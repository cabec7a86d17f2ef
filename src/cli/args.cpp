#include "cli/args.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "core/error.h"

namespace origami {

void Args::flag(const std::string& name, const std::string& def, const std::string& help,
                bool required) {
  order_.push_back(name);
  flags_[name] = {def, help, required, false};
}

void Args::boolean(const std::string& name, const std::string& help) {
  order_.push_back(name);
  flags_[name] = {"", help, false, true};
}

void Args::repeatable(const std::string& name, const std::string& def, const std::string& help) {
  order_.push_back(name);
  flags_[name] = {def, help, false, false, true};
}

std::vector<std::string> Args::list(const std::string& name) const {
  auto it = all_.find(name);
  if (it != all_.end()) return it->second;
  const std::string& d = flags_.at(name).def;
  return d.empty() ? std::vector<std::string>{} : std::vector<std::string>{d};
}

std::string Args::help() const {
  std::string s = "usage: origami " + cmd_ + " [flags]\n\n" + summary_ + "\n\nflags:\n";
  for (const auto& n : order_) {
    const Flag& f = flags_.at(n);
    std::string left = "  --" + n + (f.is_bool ? "" : " V");
    if (left.size() < 26)
      left.resize(26, ' ');
    else
      left += "\n" + std::string(26, ' ');
    s += left + f.help;
    if (f.repeat) s += " (repeatable)";
    if (f.required)
      s += " (required)";
    else if (!f.is_bool && !f.def.empty())
      s += " [default: " + f.def + "]";
    s += "\n";
  }
  return s + "  --help                  print this help and exit\n";
}

bool Args::parse(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (a.rfind("--", 0) != 0)
      fail("origami ", cmd_, ": unexpected argument '", a, "' (see --help)");
    const auto eq = a.find('=');
    const bool has_eq = eq != std::string::npos;
    const std::string name(a.begin() + 2,
                           has_eq ? a.begin() + static_cast<std::ptrdiff_t>(eq) : a.end());
    std::string value(has_eq ? a.begin() + static_cast<std::ptrdiff_t>(eq) + 1 : a.end(), a.end());
    auto it = flags_.find(name);
    if (it == flags_.end()) fail("origami ", cmd_, ": unknown flag --", name, " (see --help)");
    if (it->second.is_bool) {
      if (has_eq) fail("--", name, " takes no value");
      value.assign(1, '1');
    } else if (!has_eq) {
      if (i + 1 >= argc) fail("--", name, " needs a value");
      value = argv[++i];
    }
    values_[name] = value;
    all_[name].push_back(value);
    given_[name] = true;
  }
  for (const auto& [n, f] : flags_)
    if (f.required && !given_.count(n)) fail("origami ", cmd_, ": missing required flag --", n);
  return true;
}

std::string Args::str(const std::string& name) const {
  auto it = values_.find(name);
  return it != values_.end() ? it->second : flags_.at(name).def;
}

namespace {
int64_t parse_i64(const std::string& name, const std::string& s, int64_t min) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end) fail("--", name, "=", s, " is not an integer");
  if (errno == ERANGE)
    fail("--", name, "=", s, " is out of range (a 64-bit integer: at most 9223372036854775807)");
  if (v < min) fail("--", name, "=", v, " must be >= ", min);
  return v;
}
}  // namespace

int64_t Args::i64(const std::string& name, int64_t min) const {
  return parse_i64(name, str(name), min);
}

std::vector<int64_t> Args::i64_list(const std::string& name, int64_t min) const {
  std::vector<int64_t> v;
  for (const auto& s : list(name)) v.push_back(parse_i64(name, s, min));
  return v;
}

double Args::f64(const std::string& name) const {
  const std::string s = str(name);
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end) fail("--", name, "=", s, " is not a number");
  if (!std::isfinite(v)) fail("--", name, "=", s, " is not a finite number");
  return v;
}

double Args::f64(const std::string& name, double lo, double hi, bool hi_open) const {
  const double v = f64(name);
  if (v < lo || v > hi || (hi_open && v == hi)) {
    if (std::isinf(hi)) fail("--", name, "=", str(name), " must be >= ", lo);
    fail("--", name, "=", str(name), " must be in [", lo, ", ", hi, hi_open ? ")" : "]");
  }
  return v;
}

bool Args::on(const std::string& name) const {
  return given_.count(name) > 0;
}

}  // namespace origami
