// LinkWatcher: follows network interfaces over rtnetlink, in the network namespace of
// the calling thread: names, ifindexes, up/down, addresses, deletion and re-creation.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "killswitch/fd.hpp"

namespace ks {

struct LinkState {
  std::string name;
  std::uint32_t ifindex = 0;
  std::uint32_t flags = 0;  // IFF_*
  bool has_ipv4 = false;    // any IPv4 address
  bool has_ipv6 = false;    // any IPv6 address of global scope

  // Up enough to carry traffic: administratively up and with carrier (IFF_RUNNING).
  bool usable() const;
};

class LinkWatcher {
 public:
  // Opens a NETLINK_ROUTE socket subscribed to link and IPv4/IPv6 address changes and
  // reads the full state once. Throws ks::Error.
  LinkWatcher();

  // For epoll: readable when changes are pending.
  int fd() const { return sock_.get(); }

  // Reads every pending message without blocking. Returns true when the state changed.
  // A lost-message overrun (ENOBUFS) triggers a full re-dump, so state stays exact.
  bool process();

  // Throws away the state and dumps links and addresses again.
  void resync();

  const std::map<std::uint32_t, LinkState>& links() const { return links_; }
  std::optional<LinkState> find(std::string_view name) const;

 private:
  UniqueFd sock_;
  std::map<std::uint32_t, LinkState> links_;
  // implementation details are free to add members
};

}  // namespace ks
