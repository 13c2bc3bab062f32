// ksctl setup's file parsers: wg-quick files and resolvconf records, whose DNS lines an
// OpenVPN server pushes or a downloaded VPN configuration carries. Whatever they hold, the
// parsers return addresses ksd accepts, never crash; and the planner turns what they found
// into a configuration ksd parses (it checks that itself and throws ks::Error otherwise:
// that would be a finding too, so it is not caught here).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "killswitch/setup_plan.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ks::setup::Observations seen;
  seen.wg_quick.push_back({"wg0", "fuzz.conf", ks::setup::parse_wg_quick_dns(text)});
  seen.resolvconf.push_back({"tun.wg0", "fuzz", ks::setup::parse_resolv_conf_nameservers(text)});
  // The input as an interface name too (setup takes names from the links and --tunnel).
  const std::string name(text.substr(0, 15));
  if (ks::is_valid_interface_name(name)) seen.wg_quick.push_back({name, "fuzz2.conf", {}});
  (void)ks::setup::plan_setup(seen, {});
  return 0;
}
