// The metrics text (core/src/metrics.cpp) on bytes a local user controls: an app's command
// and cgroup name, a profile's and a tunnel's name become label values; and the HTTP
// request the metrics endpoint reads from any local client. Whatever the bytes, each name
// stays inside its label: the text has exactly the lines a harmless name gives, every
// line is valid UTF-8, every label value holds only the escapes \\ \" \n and unescapes to
// the name as label_value() cleaned it. The HTTP parser must answer, never crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "killswitch/json_text.hpp"
#include "killswitch/metrics.hpp"

namespace {

std::size_t count_lines(std::string_view text) {
  std::size_t n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

ks::metrics::Snapshot snapshot(const std::string& name) {
  ks::metrics::Snapshot s;
  s.daemon_up = true;
  s.pinned = true;
  s.version = name;
  s.profiles.push_back({name, true, {{name, "up", 3}}, {}});
  s.apps.push_back({name, name, {42}, name, {}});
  return s;
}

// Every `"` that opens a label value: the value up to its closing quote, unescaped.
// Aborts on an escape other than \\ \" \n, or a raw newline inside a value.
void check_values(std::string_view text, const std::string& expected) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '#') {  // a comment line: HELP texts are fixed
      i = text.find('\n', i);
      continue;
    }
    if (text[i] != '"') continue;
    std::string value;
    for (++i; text[i] != '"'; ++i) {
      if (text[i] == '\n') std::abort();
      if (text[i] == '\\') {
        const char e = text[++i];
        if (e != '\\' && e != '"' && e != 'n') std::abort();
        value += e == 'n' ? '\n' : e;
      } else {
        value += text[i];
      }
    }
    // Labels are the fuzzed name, a pid, a fixed state or the command's name.
    if (value != expected && value != "42" && value != "up" && value != "down" &&
        value != "missing" && expected.find(value) == std::string::npos)
      std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  (void)ks::metrics::parse_http_request(input);
  (void)ks::metrics::http_head_end(input);

  const std::string cleaned = ks::valid_utf8(input);
  // What label_value() keeps of the name: U+FFFD for control characters but newline.
  std::string expected;
  for (char c : cleaned) {
    const auto u = static_cast<unsigned char>(c);
    expected +=
        (u < 0x20 && c != '\n') || u == 0x7f ? std::string("\xEF\xBF\xBD") : std::string(1, c);
  }
  for (auto format : {ks::metrics::Format::kOpenMetrics, ks::metrics::Format::kPrometheus}) {
    const std::string text = ks::metrics::render(snapshot(input), format);
    if (count_lines(text) != count_lines(ks::metrics::render(snapshot("x"), format))) std::abort();
    if (ks::valid_utf8(text) != text) std::abort();
    check_values(text, expected);
  }
  return 0;
}
