// Terminal output for ksctl: colour only on a TTY (and never with NO_COLOR), aligned
// tables, one JSON document for scripts.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "killswitch/diagnostics.hpp"

namespace ksctl {

// One JSON document: indented for a person at a terminal, one line for scripts.
inline std::string json_text(const nlohmann::json& j) {
  // Invalid UTF-8 (a command line can hold any bytes) becomes U+FFFD, not an exception.
  return j.dump(::isatty(STDOUT_FILENO) ? 2 : -1, ' ', false,
                nlohmann::json::error_handler_t::replace);
}

inline bool color_enabled() { return ::isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR"); }

inline std::string paint(const std::string& text, const char* code) {
  return color_enabled() ? std::string("\033[") + code + "m" + text + "\033[0m" : text;
}
inline std::string green(const std::string& t) { return paint(t, "32"); }
inline std::string yellow(const std::string& t) { return paint(t, "33"); }
inline std::string red(const std::string& t) { return paint(t, "31"); }

// Width on the terminal: escape sequences take none.
inline std::size_t visible_width(const std::string& s) {
  std::size_t width = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\033') {
      while (i < s.size() && s[i] != 'm') ++i;
      continue;
    }
    if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80) ++width;  // UTF-8 lead bytes
  }
  return width;
}

inline std::string pad(std::string s, std::size_t width) {
  std::size_t w = visible_width(s);
  if (w < width) s.append(width - w, ' ');
  return s;
}

// Columns sized to their widest cell; the last column is not padded (commands, text).
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  void print(std::FILE* out = stdout) const {
    std::vector<std::size_t> widths;
    for (const auto& r : rows_) {
      if (widths.size() < r.size()) widths.resize(r.size(), 0);
      for (std::size_t i = 0; i < r.size(); ++i)
        widths[i] = std::max(widths[i], visible_width(r[i]));
    }
    for (const auto& r : rows_) {
      std::string line;
      for (std::size_t i = 0; i < r.size(); ++i)
        line += i + 1 < r.size() ? pad(r[i], widths[i]) + "  " : r[i];
      std::fprintf(out, "%s\n", line.c_str());
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// One line per check (its verdict + name + detail, with a fix where there is one); any
// kFail makes the command fail. With json set, nothing is printed and the checks are
// collected for one document instead.
class Checks {
 public:
  explicit Checks(bool json = false) : json_(json) {}
  void line(ks::Verdict verdict, const std::string& check, const std::string& detail,
            const std::string& fix = "") {
    if (verdict == ks::Verdict::kFail) failed_ = true;
    const char* word = ks::verdict_name(verdict);
    const bool show_fix = !fix.empty() && verdict != ks::Verdict::kOk;
    if (json_) {
      nlohmann::json j = {{"check", check}, {"verdict", word}, {"detail", detail}};
      if (show_fix) j["fix"] = fix;
      all_.push_back(j);
      return;
    }
    const char* color = verdict == ks::Verdict::kOk     ? "32"
                        : verdict == ks::Verdict::kFail ? "31"
                                                        : "33";
    std::printf("%s %s: %s\n", paint(pad(word, 4), color).c_str(), check.c_str(), detail.c_str());
    if (show_fix) std::printf("     fix: %s\n", fix.c_str());
  }
  bool failed() const { return failed_; }
  const nlohmann::json& all() const { return all_; }

 private:
  bool json_;
  bool failed_ = false;
  nlohmann::json all_ = nlohmann::json::array();
};

}  // namespace ksctl
