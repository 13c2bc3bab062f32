// LinkWatcher: follows network interfaces over rtnetlink, in the network namespace of
// the calling thread: names, ifindexes, up/down, addresses, deletion and re-creation.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "killswitch/fd.hpp"

namespace ks {

// One local address of a link (IFA_LOCAL, or IFA_ADDRESS where there is no IFA_LOCAL).
struct LinkAddress {
  int family = 0;  // AF_INET or AF_INET6
  std::array<std::uint8_t, 16> bytes{};

  bool operator==(const LinkAddress&) const = default;
  auto operator<=>(const LinkAddress&) const = default;
};

struct LinkState {
  std::string name;
  std::uint32_t ifindex = 0;
  std::uint32_t flags = 0;  // IFF_*
  std::uint16_t type = 0;   // ARPHRD_*: ARPHRD_NONE for a layer-3 tunnel (tun, WireGuard)
  std::string kind;         // IFLA_INFO_KIND: "wireguard", "tun", "veth", ...; "" if none
  bool has_ipv4 = false;    // any IPv4 address
  bool has_ipv6 = false;    // any IPv6 address of global scope
  // The addresses behind has_ipv4/has_ipv6 (IPv4 all, IPv6 global scope), sorted. ksd
  // keeps traffic sourced from a tunnel's addresses in that tunnel.
  std::vector<LinkAddress> addresses;

  // Up enough to carry traffic: administratively up and with carrier (IFF_RUNNING).
  bool usable() const;

  bool operator==(const LinkState&) const = default;
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

  // Throws away the state and dumps links and addresses again. Throws ks::Error; after a
  // failure the old state is kept and the next process() retries the resync.
  void resync();

  const std::map<std::uint32_t, LinkState>& links() const { return links_; }
  std::optional<LinkState> find(std::string_view name) const;

  // Applies every RTM_{NEW,DEL}{LINK,ADDR} message of one rtnetlink datagram to a link
  // table, as process() does with what the kernel sends (the parser of input ksd takes from
  // the kernel; fuzzed by fuzz/fuzz_netlink.cpp). Returns false when the framing is broken.
  static bool apply_datagram(const char* buf, std::size_t len,
                             std::map<std::uint32_t, LinkState>& links);

  // How many full re-dumps ran after the initial one (overruns and resync() calls); lets
  // the daemon log overruns and tests prove the overrun path ran.
  std::uint64_t resync_count() const { return resyncs_; }

 private:
  // Identity of one address as the kernel reports it (family, prefix length, IFA_LOCAL
  // and IFA_ADDRESS bytes), mapped to its ifa_scope.
  using AddressMap = std::map<std::string, unsigned char>;

  enum class Drain { kEmpty, kOverrun };

  Drain drain_events();
  void dump(std::uint16_t type, std::map<std::uint32_t, LinkState>& links,
            std::map<std::uint32_t, AddressMap>& addrs);
  // Applies one RTM_{NEW,DEL}{LINK,ADDR} message (payload after the nlmsghdr).
  static void apply(const char* payload, std::size_t len, std::uint16_t type,
                    std::map<std::uint32_t, LinkState>& links,
                    std::map<std::uint32_t, AddressMap>& addrs);

  UniqueFd sock_;       // subscribed to the multicast groups; never used for requests
  UniqueFd dump_sock_;  // unsubscribed; carries only our dump requests and their replies
  std::map<std::uint32_t, LinkState> links_;
  std::map<std::uint32_t, AddressMap> addrs_;  // by ifindex; may precede the link's entry
  std::uint32_t seq_ = 0;
  std::uint64_t resyncs_ = 0;
  bool stale_ = false;  // a resync failed half-way; the next process() must redo it
};

}  // namespace ks
