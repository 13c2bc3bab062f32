// rtnetlink datagrams (LinkWatcher::apply_datagram): links and addresses as the kernel
// reports them, including from interfaces any local user can create in a user namespace;
// and routing rules (parse_rule_message: what ksd reads back from a rule dump).
#include <cstddef>
#include <cstdint>
#include <map>

#include "killswitch/links.hpp"
#include "killswitch/routing_plan.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::map<std::uint32_t, ks::LinkState> links;
  // Twice into the same table: updates of known links take other paths than new ones.
  ks::LinkWatcher::apply_datagram(reinterpret_cast<const char*>(data), size, links);
  ks::LinkWatcher::apply_datagram(reinterpret_cast<const char*>(data), size, links);
  for (const auto& [ifindex, link] : links) (void)link.usable();
  if (auto rule = ks::parse_rule_message(data, size)) (void)rule->rule.describe();
  return 0;
}
