// Kept apart from config.cpp so that ksrun, which validates only the profile name, does
// not link the TOML parser.
#include <algorithm>

#include "killswitch/config.hpp"

namespace ks {

bool is_valid_profile_name(std::string_view name) {
  if (name.empty() || name.size() > 31) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace ks
