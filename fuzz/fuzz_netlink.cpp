// rtnetlink datagrams (LinkWatcher::apply_datagram): links and addresses as the kernel
// reports them, including from interfaces any local user can create in a user namespace.
#include <cstddef>
#include <cstdint>
#include <map>

#include "killswitch/links.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::map<std::uint32_t, ks::LinkState> links;
  // Twice into the same table: updates of known links take other paths than new ones.
  ks::LinkWatcher::apply_datagram(reinterpret_cast<const char*>(data), size, links);
  ks::LinkWatcher::apply_datagram(reinterpret_cast<const char*>(data), size, links);
  for (const auto& [ifindex, link] : links) (void)link.usable();
  return 0;
}
