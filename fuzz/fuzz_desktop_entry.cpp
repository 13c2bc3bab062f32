// Desktop entries (core/src/desktop_entry.cpp) on bytes anyone controls: `ksctl desktop
// protect` reads the entries of any package and of the user's downloads. Whatever the
// bytes: parse refuses them with ks::Error or accepts them; an accepted entry is written
// back unchanged in meaning (parse(text()) gives the same text), and its protected override
// parses again, carries the marker and runs every Exec through ksrun.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "killswitch/desktop_entry.hpp"
#include "killswitch/error.hpp"

namespace dt = ks::desktop;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // The Exec quoting rules on the raw bytes as well.
  try {
    for (const auto& arg : dt::split_exec(input)) {
      auto back = dt::split_exec(dt::quote_exec_arg(arg));
      if (back.size() != 1) std::abort();
    }
  } catch (const ks::Error&) {
  }
  dt::Entry entry;
  try {
    entry = dt::Entry::parse(input);
  } catch (const ks::Error&) {
    return 0;
  }
  const std::string text = entry.text();
  if (dt::Entry::parse(text).text() != text) std::abort();
  try {
    dt::Entry out =
        dt::make_protected(entry, "/usr/share/applications/x.desktop", "/usr/bin/ksrun", "default");
    dt::Entry again = dt::Entry::parse(out.text());
    if (!dt::marker_of(again)) std::abort();
    for (const auto& g : again.groups()) {
      if (g.name != dt::kMainGroup && g.name.rfind("Desktop Action ", 0) != 0) continue;
      auto exec = again.raw(g.name, "Exec");
      if (!exec) continue;
      auto args = dt::split_exec(dt::unescape_string(*exec));
      if (args.size() < 5 || args[0] != "/usr/bin/ksrun" || args[3] != "--") std::abort();
    }
  } catch (const ks::Error&) {
  }
  return 0;
}
