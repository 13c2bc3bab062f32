#include "killswitch/cli_hints.hpp"

#include <algorithm>
#include <vector>

namespace ks {
namespace {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

bool contains(std::span<const std::string_view> list, std::string_view word) {
  return std::find(list.begin(), list.end(), word) != list.end();
}

// Visits the option words (and skips their values) up to the first other word or "--";
// returns the index where options end.
template <typename Visit>
std::size_t scan_options(std::span<const std::string> args,
                         std::span<const std::string_view> with_value, Visit visit) {
  std::size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--" || a.empty() || a[0] != '-' || a == "-") break;
    const std::string name = a.substr(0, a.find('='));
    visit(name);
    if (a.find('=') == std::string::npos && contains(with_value, name)) ++i;  // its value
  }
  return i;
}

}  // namespace

std::optional<std::string> closest_word(std::string_view word,
                                        std::span<const std::string_view> candidates) {
  std::optional<std::string> best;
  std::size_t best_distance = 3;
  for (std::string_view c : candidates) {
    const std::size_t d = edit_distance(word, c);
    if (d < best_distance && d < word.size()) {
      best_distance = d;
      best = std::string(c);
    }
  }
  return best;
}

std::optional<std::string> first_unknown_option(std::span<const std::string> args,
                                                std::span<const std::string_view> known,
                                                std::span<const std::string_view> with_value) {
  std::optional<std::string> unknown;
  scan_options(args, with_value, [&](const std::string& name) {
    if (!unknown && !contains(known, name)) unknown = name;
  });
  return unknown;
}

std::optional<std::string> first_word(std::span<const std::string> args,
                                      std::span<const std::string_view> with_value) {
  std::size_t i = scan_options(args, with_value, [](const std::string&) {});
  if (i < args.size() && args[i] == "--") ++i;
  if (i >= args.size()) return std::nullopt;
  return args[i];
}

}  // namespace ks
