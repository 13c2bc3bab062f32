// The JSON text writer (core/src/json_text.cpp) on bytes a local user controls: command
// lines, task names and cgroup names end up in `ksctl list` and `ksctl events`. Whatever
// the bytes, the text must be valid JSON and say what nlohmann-json's writer says for the
// same string (ksctl reads both).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "killswitch/json_text.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string out;
  ks::JsonText(out)
      .begin_object()
      .member("s", input)
      .key("n")
      .begin_array()
      .value(std::uint64_t{size})
      .end_array()
      .end_object();
  if (!nlohmann::json::accept(out)) std::abort();
  const std::string theirs = nlohmann::json(std::string(input))
                                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (ks::json_string(input) != theirs) std::abort();
  return 0;
}
