// The configuration file (parse_config): whoever may write it, and every typo a user makes.
// A bad file must give an error, never a crash or a half-parsed policy.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "killswitch/config.hpp"
#include "killswitch/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    ks::parse_config(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.toml");
  } catch (const ks::Error&) {
  }
  return 0;
}
