// The real cgroup_skb programs, run by the kernel on hand-built packets: "BPF tests as
// data" in the style of katran's test fixtures. Each test loads the skeleton with
// Enforcement::load into a throw-away pin directory, writes the maps through the
// Enforcement API, and feeds a table of {description, packet, device, expected verdict}
// to the egress and ingress programs with BPF_PROG_TEST_RUN. Nothing is attached to any
// cgroup. Benchmarks live elsewhere; nothing here measures time.
//
// What BPF_PROG_TEST_RUN does for BPF_PROG_TYPE_CGROUP_SKB (net/bpf/test_run.c,
// bpf_prog_test_run_skb), verified by the tests below on Linux 6.18:
//
//  * data_in is a whole Ethernet frame. The kernel runs eth_type_trans() on it, which
//    sets skb->protocol from the EtherType and pulls the 14-byte Ethernet header; for
//    cgroup_skb (not an L2 program type) the header is not pushed back, so the program
//    sees the packet starting at the network header, as it does when attached, and
//    skb->len excludes the Ethernet header. data_out gives the frame back with the
//    Ethernet header zeroed. Frames shorter than 14 bytes are refused with EINVAL before
//    the program runs, and so are frames whose EtherType is IPv4 (IPv6) but whose
//    network part is shorter than 20 (40) bytes: on this kernel the programs' "IP header
//    unreadable" path is unreachable through test runs (see
//    KernelRefusesShortNetworkHeaders); truncation after the fixed header is accepted.
//  * __sk_buff.protocol cannot be given in ctx_in (EINVAL, like every field other than
//    mark, priority, ingress_ifindex, ifindex, cb, tstamp, wire_len, gso_segs, gso_size
//    and hwtstamp). The protocol comes only from the EtherType.
//  * ctx_in.ifindex selects the device (skb->dev) in the caller's network namespace:
//    0 or 1 (or no ctx_in at all) mean loopback; another value must name an existing
//    device of the caller's namespace, else ENODEV. That is why these tests run in a
//    throw-away network namespace with a veth pair: the "tunnel" and the "other" device.
//  * skb->sk is not NULL: the kernel hands the program a dummy socket it has just
//    allocated (family from the packet, cgroup of the calling task). Our programs see it
//    as a full socket without ks_sk_state storage, i.e. exactly like a socket that
//    sock_create never classified: KS_PROFILE_NONE. The counters prove which socket it
//    is: they are charged to the cgroup of the calling process (bpf_skb_cgroup_id), not
//    to cgroup id 0 (which a NULL skb->sk would give).
//
// Consequently what is testable here is the part of the policy that does not depend on
// a classified socket: loopback passes, the ksrun UDP canary to 127.0.0.1:9 / [::1]:9 on
// loopback is dropped (egress only), everything else is dropped as "no profile" — even
// through the profile's own tunnel, towards its allow_lan CIDRs, or with a profile mark
// that names no app slot: the programs fail closed. The one thing a packet's mark can do
// is what it does for real packets (where the kernel copies the socket's mark into them):
// take the pass path of an app slot ksd gave to that profile, through that profile's
// tunnels (FastPathFollowsSlotAndTunnels). Malformed and truncated packets must not crash or
// confuse them. Socket-dependent verdicts (tunnel, LAN) are covered by the lab tier.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "killswitch/cgroup.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/error.hpp"
#include "killswitch/events.hpp"
#include "killswitch/fd.hpp"
#include "killswitch_abi.h"
#include "netns_fixture.hpp"

namespace ks {
namespace {

using Bytes = std::vector<std::uint8_t>;

constexpr std::uint32_t kProfile = 1;

// ---- packet building --------------------------------------------------------------

void PutU16(Bytes& b, std::size_t at, std::uint16_t v) {
  b[at] = static_cast<std::uint8_t>(v >> 8);
  b[at + 1] = static_cast<std::uint8_t>(v & 0xff);
}

void PutAddr(Bytes& b, std::size_t at, int family, const char* text) {
  std::uint8_t addr[16] = {};
  if (inet_pton(family, text, addr) != 1) ADD_FAILURE() << "bad test address " << text;
  std::memcpy(b.data() + at, addr, family == AF_INET ? 4 : 16);
}

Bytes Concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Bytes Truncated(Bytes b, std::size_t size) {
  b.resize(size);
  return b;
}

// L4 headers (checksums are left zero: the programs never look at them).
Bytes Udp(std::uint16_t sport, std::uint16_t dport, std::size_t payload = 8) {
  Bytes b(8 + payload, 0);
  PutU16(b, 0, sport);
  PutU16(b, 2, dport);
  PutU16(b, 4, static_cast<std::uint16_t>(b.size()));
  return b;
}

Bytes Tcp(std::uint16_t sport, std::uint16_t dport) {
  Bytes b(20, 0);
  PutU16(b, 0, sport);
  PutU16(b, 2, dport);
  b[12] = 5 << 4;  // data offset
  b[13] = 0x02;    // SYN
  return b;
}

// An IPv4 header with `option_words` 32-bit words of NOP options (ihl = 5 + words), or
// with a forced ihl for malformed headers.
Bytes Ipv4(const char* src, const char* dst, std::uint8_t proto, const Bytes& l4,
           int option_words = 0, std::optional<std::uint8_t> forced_ihl = std::nullopt) {
  const std::size_t header = 20 + 4 * static_cast<std::size_t>(option_words);
  Bytes b(header, 0);
  const std::uint8_t ihl = forced_ihl ? *forced_ihl : static_cast<std::uint8_t>(header / 4);
  b[0] = static_cast<std::uint8_t>(0x40 | (ihl & 0x0f));
  PutU16(b, 2, static_cast<std::uint16_t>(header + l4.size()));
  b[8] = 64;  // ttl
  b[9] = proto;
  PutAddr(b, 12, AF_INET, src);
  PutAddr(b, 16, AF_INET, dst);
  for (std::size_t i = 20; i < header; ++i) b[i] = 1;  // IPOPT_NOOP
  return Concat(b, l4);
}

Bytes Ipv6(const char* src, const char* dst, std::uint8_t next_header, const Bytes& payload) {
  Bytes b(40, 0);
  b[0] = 0x60;
  PutU16(b, 4, static_cast<std::uint16_t>(payload.size()));
  b[6] = next_header;
  b[7] = 64;  // hop limit
  PutAddr(b, 8, AF_INET6, src);
  PutAddr(b, 24, AF_INET6, dst);
  return Concat(b, payload);
}

// An 8-byte hop-by-hop options header (PadN) followed by `next`.
Bytes HopByHop(std::uint8_t next, const Bytes& rest) {
  Bytes b = {next, 0, 1, 4, 0, 0, 0, 0};
  return Concat(b, rest);
}

// What BPF_PROG_TEST_RUN wants for cgroup_skb: an Ethernet frame (see the top comment).
Bytes Frame(std::uint16_t ethertype, const Bytes& l3) {
  Bytes b(ETH_HLEN, 0);
  b[0] = 0x02;  // locally administered destination, zero source: irrelevant to the programs
  PutU16(b, 12, ethertype);
  return Concat(b, l3);
}

Bytes V4(const Bytes& ip) { return Frame(ETH_P_IP, ip); }
Bytes V6(const Bytes& ip) { return Frame(ETH_P_IPV6, ip); }

Bytes Arp() {
  Bytes b(28, 0);
  PutU16(b, 0, 1);       // Ethernet
  PutU16(b, 2, 0x0800);  // IPv4
  b[4] = 6;
  b[5] = 4;
  PutU16(b, 6, 1);  // request
  return Frame(ETH_P_ARP, b);
}

// ---- the data ---------------------------------------------------------------------

// Device the packet is run on, resolved to an ifindex at run time.
enum class Dev {
  kNoCtx,     // no ctx_in at all: the kernel uses loopback
  kLoopback,  // ctx_in.ifindex = 1
  kTunnel,    // the profile's tunnel (in its ks_tunnel_sets entry and the bind target)
  kOther,     // a non-tunnel interface, the "eth0"
};

enum class Verdict {
  kPass,    // program returns 1; counted as allowed
  kDrop,    // program returns 0; counted as blocked
  kCanary,  // program returns 0; deliberately not counted (ksrun's proof)
};

struct Case {
  const char* description;
  Bytes frame;
  Dev dev;
  Verdict expected;
  std::uint32_t mark = 0;  // ctx_in.mark
};

const char* Name(Verdict v) {
  return v == Verdict::kPass ? "pass" : v == Verdict::kDrop ? "drop" : "drop (canary)";
}

constexpr std::uint16_t kCanary = KS_CANARY_PORT;
constexpr std::uint8_t kUdp = IPPROTO_UDP;
constexpr std::uint8_t kTcp = IPPROTO_TCP;

// Addresses: 198.51.100.0/24 and 2001:db8::/32 are the profile's allow_lan; 203.0.113.9
// and 2001:db9::9 are "the internet".
std::vector<Case> EgressCases() {
  return {
      // No classified socket: dropped whatever the device and destination.
      {"v4 UDP to the internet via a non-tunnel device",
       V4(Ipv4("10.1.0.2", "203.0.113.9", kUdp, Udp(40000, 53))), Dev::kOther, Verdict::kDrop},
      {"v4 UDP via the profile's own tunnel, no classified socket",
       V4(Ipv4("10.1.0.2", "203.0.113.9", kUdp, Udp(40000, 53))), Dev::kTunnel, Verdict::kDrop},
      {"v4 TCP via the profile's own tunnel, no classified socket",
       V4(Ipv4("10.1.0.2", "203.0.113.9", kTcp, Tcp(40000, 443))), Dev::kTunnel, Verdict::kDrop},
      {"v4 UDP to an allow_lan address, no classified socket",
       V4(Ipv4("10.1.0.2", "198.51.100.7", kUdp, Udp(40000, 53))), Dev::kOther, Verdict::kDrop},
      {"v4 UDP via the tunnel carrying the profile's mark (the mark grants nothing)",
       V4(Ipv4("10.1.0.2", "203.0.113.9", kUdp, Udp(40000, 53))), Dev::kTunnel, Verdict::kDrop,
       KS_MARK_BASE | kProfile},
      {"v4 UDP to 127.0.0.1:9 leaving via a non-loopback device",
       V4(Ipv4("10.1.0.2", "127.0.0.1", kUdp, Udp(40000, kCanary))), Dev::kOther, Verdict::kDrop},
      {"v6 UDP to the internet via a non-tunnel device",
       V6(Ipv6("2001:db9::2", "2001:db9::9", kUdp, Udp(40000, 53))), Dev::kOther, Verdict::kDrop},
      {"v6 UDP via the profile's own tunnel, no classified socket",
       V6(Ipv6("2001:db9::2", "2001:db9::9", kUdp, Udp(40000, 53))), Dev::kTunnel, Verdict::kDrop},
      {"v6 TCP via the profile's own tunnel, no classified socket",
       V6(Ipv6("2001:db9::2", "2001:db9::9", kTcp, Tcp(40000, 443))), Dev::kTunnel, Verdict::kDrop},
      {"v6 UDP to an allow_lan address, no classified socket",
       V6(Ipv6("2001:db8::2", "2001:db8::7", kUdp, Udp(40000, 53))), Dev::kOther, Verdict::kDrop},

      // Loopback passes, except ksrun's UDP canary.
      {"v4 UDP to 127.0.0.1:53 on loopback (no ctx_in)",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, 53))), Dev::kNoCtx, Verdict::kPass},
      {"v4 UDP to 127.0.0.1:53 on loopback (ctx_in.ifindex 1)",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, 53))), Dev::kLoopback, Verdict::kPass},
      {"v4 TCP to 127.0.0.1:443 on loopback",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kTcp, Tcp(40000, 443))), Dev::kLoopback, Verdict::kPass},
      {"v4 canary: UDP to 127.0.0.1:9 on loopback (no ctx_in)",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, kCanary))), Dev::kNoCtx,
       Verdict::kCanary},
      {"v4 canary: UDP to 127.0.0.1:9 on loopback (ctx_in.ifindex 1)",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, kCanary))), Dev::kLoopback,
       Verdict::kCanary},
      {"v4 canary with IP options (ihl 6): port found after the options",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, kCanary), 1)), Dev::kLoopback,
       Verdict::kCanary},
      {"v4 canary with a 1400-byte payload",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, kCanary, 1400))), Dev::kLoopback,
       Verdict::kCanary},
      {"v4 UDP to 127.0.0.1:10 (not the canary port)",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, 10))), Dev::kLoopback, Verdict::kPass},
      {"v4 UDP from port 9 to 127.0.0.1:53 (only the destination port counts)",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(kCanary, 53))), Dev::kLoopback, Verdict::kPass},
      {"v4 TCP to 127.0.0.1:9 (the TCP canary is refused by connect, not by egress)",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kTcp, Tcp(40000, kCanary))), Dev::kLoopback,
       Verdict::kPass},
      {"v4 UDP to 127.0.0.2:9 (egress knows the canary at 127.0.0.1 only)",
       V4(Ipv4("127.0.0.1", "127.0.0.2", kUdp, Udp(40000, kCanary))), Dev::kLoopback,
       Verdict::kPass},
      {"v6 canary: UDP to [::1]:9 on loopback (no ctx_in)",
       V6(Ipv6("::1", "::1", kUdp, Udp(40000, kCanary))), Dev::kNoCtx, Verdict::kCanary},
      {"v6 canary: UDP to [::1]:9 on loopback (ctx_in.ifindex 1)",
       V6(Ipv6("::1", "::1", kUdp, Udp(40000, kCanary))), Dev::kLoopback, Verdict::kCanary},
      {"v6 UDP to [::1]:53 on loopback", V6(Ipv6("::1", "::1", kUdp, Udp(40000, 53))),
       Dev::kLoopback, Verdict::kPass},
      {"v6 TCP to [::1]:9 on loopback", V6(Ipv6("::1", "::1", kTcp, Tcp(40000, kCanary))),
       Dev::kLoopback, Verdict::kPass},
      {"v6 UDP to [::2]:9 on loopback (not ::1)", V6(Ipv6("::1", "::2", kUdp, Udp(40000, kCanary))),
       Dev::kLoopback, Verdict::kPass},
      {"v6 UDP to [::1]:9 behind a hop-by-hop header (canary parser reads the fixed header)",
       V6(Ipv6("::1", "::1", 0, HopByHop(kUdp, Udp(40000, kCanary)))), Dev::kLoopback,
       Verdict::kPass},

      // Malformed and truncated (as far as the kernel lets them through, see
      // KernelRefusesShortNetworkHeaders): no crash, loopback still passes, the rest is
      // dropped.
      {"Ethernet header only (ARP EtherType), on loopback", Frame(ETH_P_ARP, {}), Dev::kLoopback,
       Verdict::kPass},
      {"Ethernet header only (ARP EtherType), on a non-loopback device", Frame(ETH_P_ARP, {}),
       Dev::kOther, Verdict::kDrop},
      {"v4 canary cut inside the UDP port (port unreadable: not the canary)",
       Truncated(V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, kCanary))), ETH_HLEN + 23),
       Dev::kLoopback, Verdict::kPass},
      {"v4 canary with ihl 15 but no options present (port beyond the end)",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, kCanary, 0), 0, 15)), Dev::kLoopback,
       Verdict::kPass},
      {"v4 header with ihl 0, on loopback",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, 53), 0, 0)), Dev::kLoopback,
       Verdict::kPass},
      {"v4 header with ihl 0, via a non-loopback device",
       V4(Ipv4("10.1.0.2", "203.0.113.9", kUdp, Udp(40000, 53), 0, 0)), Dev::kOther,
       Verdict::kDrop},
      {"v6 canary cut inside the UDP port (port unreadable: not the canary)",
       Truncated(V6(Ipv6("::1", "::1", kUdp, Udp(40000, kCanary))), ETH_HLEN + 43), Dev::kLoopback,
       Verdict::kPass},
      {"EtherType IPv6 carrying an IPv4 canary (read as IPv6: not ::1), on loopback",
       V6(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, kCanary, 64))), Dev::kLoopback,
       Verdict::kPass},
      {"EtherType IPv4 carrying an IPv6 canary (read as IPv4: not 127.0.0.1), on loopback",
       V4(Ipv6("::1", "::1", kUdp, Udp(40000, kCanary))), Dev::kLoopback, Verdict::kPass},
      {"ARP on loopback", Arp(), Dev::kLoopback, Verdict::kPass},
      {"ARP via a non-loopback device", Arp(), Dev::kOther, Verdict::kDrop},
      {"802.1Q-tagged v4 canary on loopback (not parsed as IP)",
       Frame(ETH_P_8021Q, Concat({0x00, 0x05, 0x08, 0x00},
                                 Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, kCanary)))),
       Dev::kLoopback, Verdict::kPass},
  };
}

std::vector<Case> IngressCases() {
  return {
      {"v4 UDP from the internet via a non-tunnel device",
       V4(Ipv4("203.0.113.9", "10.1.0.2", kUdp, Udp(53, 40000))), Dev::kOther, Verdict::kDrop},
      {"v4 UDP via the profile's own tunnel, no classified socket",
       V4(Ipv4("203.0.113.9", "10.1.0.2", kUdp, Udp(53, 40000))), Dev::kTunnel, Verdict::kDrop},
      {"v4 UDP from an allow_lan address, no classified socket",
       V4(Ipv4("198.51.100.7", "10.1.0.2", kUdp, Udp(53, 40000))), Dev::kOther, Verdict::kDrop},
      {"v6 UDP from the internet via a non-tunnel device",
       V6(Ipv6("2001:db9::9", "2001:db9::2", kUdp, Udp(53, 40000))), Dev::kOther, Verdict::kDrop},
      {"v6 TCP via the profile's own tunnel, no classified socket",
       V6(Ipv6("2001:db9::9", "2001:db9::2", kTcp, Tcp(443, 40000))), Dev::kTunnel, Verdict::kDrop},
      {"v6 UDP from an allow_lan address, no classified socket",
       V6(Ipv6("2001:db8::7", "2001:db8::2", kUdp, Udp(53, 40000))), Dev::kOther, Verdict::kDrop},
      {"v4 UDP on loopback", V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(53, 40000))), Dev::kNoCtx,
       Verdict::kPass},
      {"v6 TCP on loopback", V6(Ipv6("::1", "::1", kTcp, Tcp(443, 40000))), Dev::kLoopback,
       Verdict::kPass},
      {"v4 UDP to 127.0.0.1:9 on loopback (the canary is judged on egress only)",
       V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, kCanary))), Dev::kLoopback,
       Verdict::kPass},
      {"v6 UDP to [::1]:9 on loopback (the canary is judged on egress only)",
       V6(Ipv6("::1", "::1", kUdp, Udp(40000, kCanary))), Dev::kLoopback, Verdict::kPass},
      {"v4 UDP cut inside the UDP header, on loopback",
       Truncated(V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(53, 40000))), ETH_HLEN + 21),
       Dev::kLoopback, Verdict::kPass},
      {"v6 UDP cut inside the UDP header, via a non-loopback device",
       Truncated(V6(Ipv6("2001:db9::9", "2001:db9::2", kUdp, Udp(53, 40000))), ETH_HLEN + 41),
       Dev::kOther, Verdict::kDrop},
      {"ARP via the tunnel", Arp(), Dev::kTunnel, Verdict::kDrop},
  };
}

// ---- the fixture ------------------------------------------------------------------

struct TestRunResult {
  int error = 0;  // errno of BPF_PROG_TEST_RUN, 0 when the program ran
  std::uint32_t retval = 0;
  Bytes data_out;  // the frame as the kernel hands it back
};

ks_lan_key LanKey(std::uint32_t profile, int family, const char* text, std::uint32_t prefix) {
  ks_lan_key key{};
  key.profile_id = htonl(profile);
  std::uint8_t addr[16] = {};
  if (inet_pton(family, text, addr) != 1) ADD_FAILURE() << "bad test address " << text;
  if (family == AF_INET) {
    key.addr[10] = 0xff;
    key.addr[11] = 0xff;
    std::memcpy(key.addr + 12, addr, 4);
    key.prefixlen = 32 + 96 + prefix;
  } else {
    std::memcpy(key.addr, addr, 16);
    key.prefixlen = 32 + prefix;
  }
  return key;
}

class BpfEgressTest : public test::NetnsTest {
 protected:
  void SetUp() override {
    test::NetnsTest::SetUp();
    if (HasFatalFailure()) return;
    pin_dir_ = "/sys/fs/bpf/kstest-unit-" + std::to_string(::getpid());
    RemovePins();  // leftovers of a crashed earlier run that had the same pid
    if (HasFailure()) return;
    try {
      enforcement_.emplace(Enforcement::load(pin_dir_));
      const ProgramIds ids = enforcement_->program_ids();
      egress_.reset(bpf_prog_get_fd_by_id(ids.at("egress")));
      ingress_.reset(bpf_prog_get_fd_by_id(ids.at("ingress")));
    } catch (const std::exception& e) {
      FAIL() << "cannot load the BPF programs into " << pin_dir_ << ": " << e.what();
    }
    ASSERT_TRUE(egress_) << "bpf_prog_get_fd_by_id(egress): " << std::strerror(errno);
    ASSERT_TRUE(ingress_) << "bpf_prog_get_fd_by_id(ingress): " << std::strerror(errno);

    // Devices of this namespace for ctx_in.ifindex: the "tunnel" and another device.
    ASSERT_TRUE(Run("ip link add kstun0 type veth peer name kseth0"));
    tunnel_ifindex_ = ::if_nametoindex("kstun0");  // this thread is in the test namespace
    other_ifindex_ = ::if_nametoindex("kseth0");
    ASSERT_GT(tunnel_ifindex_, 1u);
    ASSERT_GT(other_ifindex_, 1u);

    // Profile 1 as ksd writes it with its tunnel up: valid, bound to kstun0, the tunnel
    // listed for both families, allow_lan 198.51.100.0/24 and 2001:db8::/32.
    ks_config config{};
    config.netns_cookie = current_netns_cookie();
    config.flags = KS_CONFIG_READY;
    config.abi_version = KS_ABI_VERSION;
    ks_profile profile{};
    profile.flags = KS_PROFILE_VALID;
    profile.bind_ifindex_v4 = tunnel_ifindex_;
    profile.bind_ifindex_v6 = tunnel_ifindex_;
    std::strncpy(profile.name, "default", sizeof(profile.name) - 1);
    const std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t> tunnels = {
        {{kProfile, tunnel_ifindex_}, KS_FAMILY_V4 | KS_FAMILY_V6}};
    try {
      enforcement_->write_config(config);
      enforcement_->write_profile(kProfile, profile);
      enforcement_->replace_tunnels(tunnels);
      enforcement_->replace_lan({LanKey(kProfile, AF_INET, "198.51.100.0", 24),
                                 LanKey(kProfile, AF_INET6, "2001:db8::", 32)});
      ASSERT_EQ(enforcement_->read_profile(kProfile).bind_ifindex_v4, tunnel_ifindex_);
      const std::set<std::pair<std::uint32_t, std::uint32_t>> in_map = {
          {kProfile, tunnel_ifindex_}};
      ASSERT_EQ(enforcement_->tunnels(), in_map);
    } catch (const std::exception& e) {
      FAIL() << "cannot write the maps: " << e.what();
    }
  }

  void TearDown() override {
    egress_.reset();
    ingress_.reset();
    enforcement_.reset();  // closes the skeleton's map and program fds
    RemovePins();
    test::NetnsTest::TearDown();  // the namespace and its veth pair go away
  }

  void RemovePins() {
    if (pin_dir_.empty()) return;
    try {
      Enforcement::remove_pins(pin_dir_);
    } catch (const std::exception&) {
      // Whatever remove_pins left behind (unexpected files) goes with remove_all below.
    }
    std::error_code ec;
    std::filesystem::remove_all(pin_dir_, ec);
    if (std::filesystem::exists(pin_dir_))
      ADD_FAILURE() << "cannot remove the test pin directory " << pin_dir_;
  }

  std::uint32_t IfindexOf(Dev dev) const {
    switch (dev) {
      case Dev::kNoCtx:
        return 0;
      case Dev::kLoopback:
        return KS_LOOPBACK_IFINDEX;
      case Dev::kTunnel:
        return tunnel_ifindex_;
      case Dev::kOther:
        return other_ifindex_;
    }
    return 0;
  }

  static TestRunResult TestRun(int prog_fd, const Bytes& frame, const __sk_buff* ctx) {
    Bytes out(frame.size() + 256);
    LIBBPF_OPTS(bpf_test_run_opts, opts);
    opts.data_in = frame.data();
    opts.data_size_in = static_cast<std::uint32_t>(frame.size());
    opts.data_out = out.data();
    opts.data_size_out = static_cast<std::uint32_t>(out.size());
    if (ctx != nullptr) {
      opts.ctx_in = ctx;
      opts.ctx_size_in = sizeof(*ctx);
    }
    TestRunResult r;
    if (bpf_prog_test_run_opts(prog_fd, &opts) != 0) {
      r.error = errno;
      return r;
    }
    r.retval = opts.retval;
    out.resize(opts.data_size_out);
    r.data_out = std::move(out);
    return r;
  }

  TestRunResult RunCase(int prog_fd, const Case& c) const {
    if (c.dev == Dev::kNoCtx && c.mark == 0) return TestRun(prog_fd, c.frame, nullptr);
    __sk_buff ctx{};
    ctx.ifindex = IfindexOf(c.dev);
    ctx.mark = c.mark;
    return TestRun(prog_fd, c.frame, &ctx);
  }

  // Runs every case and checks its verdict; returns the counters the cases should have
  // produced.
  Counters RunTable(int prog_fd, const std::vector<Case>& cases) {
    Counters expected;
    for (const Case& c : cases) {
      SCOPED_TRACE(c.description);
      const TestRunResult r = RunCase(prog_fd, c);
      EXPECT_EQ(r.error, 0) << "BPF_PROG_TEST_RUN: " << std::strerror(r.error);
      if (r.error != 0) continue;
      const std::uint32_t want = c.expected == Verdict::kPass ? 1u : 0u;
      EXPECT_EQ(r.retval, want) << c.description << ": expected " << Name(c.expected);
      const std::uint64_t len = c.frame.size() - ETH_HLEN;  // skb->len: from the L3 header
      if (c.expected == Verdict::kPass) {
        expected.allowed_packets++;
        expected.allowed_bytes += len;
      } else if (c.expected == Verdict::kDrop) {
        expected.blocked_packets++;
        expected.blocked_bytes += len;
      }
    }
    return expected;
  }

  std::string pin_dir_;
  std::optional<Enforcement> enforcement_;
  UniqueFd egress_, ingress_;
  std::uint32_t tunnel_ifindex_ = 0, other_ifindex_ = 0;
};

void ExpectCounters(const Counters& got, const Counters& want, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(got.allowed_packets, want.allowed_packets);
  EXPECT_EQ(got.allowed_bytes, want.allowed_bytes);
  EXPECT_EQ(got.blocked_packets, want.blocked_packets);
  EXPECT_EQ(got.blocked_bytes, want.blocked_bytes);
  EXPECT_EQ(got.blocked_connects, 0u) << "packets are never counted as connects";
}

// ---- the tests --------------------------------------------------------------------

TEST_F(BpfEgressTest, EgressVerdicts) { RunTable(egress_.get(), EgressCases()); }

TEST_F(BpfEgressTest, IngressVerdicts) { RunTable(ingress_.get(), IngressCases()); }

// Every verdict is counted (the canary excepted), with skb->len as the byte count, in
// the totals (summed over profiles) and under the cgroup of the kernel's dummy socket: the calling
// process's.
TEST_F(BpfEgressTest, CountersFollowVerdicts) {
  Counters want = RunTable(egress_.get(), EgressCases());
  want += RunTable(ingress_.get(), IngressCases());
  ASSERT_GT(want.allowed_packets, 0u);
  ASSERT_GT(want.blocked_packets, 0u);

  ExpectCounters(enforcement_->totals(), want, "totals (the sum of ks_profile_counters)");
  const std::string own_cgroup = find_cgroup2_mount() + cgroup_of_pid(::getpid());
  ExpectCounters(enforcement_->counters_of(cgroup_id(own_cgroup)), want,
                 "ks_counters of " + own_cgroup);
  ExpectCounters(enforcement_->counters_of(0), Counters{},
                 "ks_counters of cgroup id 0 (what a NULL skb->sk would give)");
}

// The canary alone: dropped and invisible in the counters, so ksrun's proof never shows
// up as a blocked leak.
TEST_F(BpfEgressTest, CanaryIsNotCounted) {
  const Case v4 = {"v4 canary", V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, kCanary))),
                   Dev::kLoopback, Verdict::kCanary};
  const Case v6 = {"v6 canary", V6(Ipv6("::1", "::1", kUdp, Udp(40000, kCanary))), Dev::kLoopback,
                   Verdict::kCanary};
  RunTable(egress_.get(), {v4, v6, v4});
  ExpectCounters(enforcement_->totals(), Counters{}, "totals after three canaries");
}

// Drops make events in the ring buffer, which EventReader hands over one by one. A
// callback that throws must not stop the stream: the record it threw on is consumed all
// the same (not handed over again and again), the others still arrive, and consume()
// reports the failure afterwards.
TEST_F(BpfEgressTest, EventReaderSurvivesACallbackThatThrows) {
  std::vector<std::uint16_t> ports;
  EventReader reader(enforcement_->events_fd(), [&](const ks_event& e) {
    ports.push_back(e.port);
    if (ports.size() == 1) throw Error("the first event is bad");
  });
  ASSERT_EQ(reader.consume(), 0) << "the ring starts empty";
  for (std::uint16_t port : std::vector<std::uint16_t>{1001, 1002, 1003}) {
    const Case drop = {"v4 UDP to the internet via a non-tunnel device",
                       V4(Ipv4("10.1.0.2", "203.0.113.9", kUdp, Udp(40000, port))), Dev::kOther,
                       Verdict::kDrop};
    RunTable(egress_.get(), {drop});
  }
  try {
    reader.consume();
    ADD_FAILURE() << "consume() did not report the callback's failure";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("could not handle 1 of 3 event(s): the first event is bad"),
        std::string::npos)
        << e.what();
  }
  EXPECT_EQ(ports, (std::vector<std::uint16_t>{1001, 1002, 1003}));
  EXPECT_EQ(reader.consume(), 0) << "a record the callback threw on came back";
  EXPECT_EQ(ports.size(), 3u);
}

// The pass path (ks_fast_slots): a packet carrying the mark of an app slot that ksd gave to
// its profile passes through that profile's tunnel, counted once, in the slot's row; the
// app's counters and the profile's totals both show it. It never outlives what allowed
// it: the tunnel leaving the set, or the slot going to another app or profile, sends the
// same packet down the full path (dropped here: test runs have no classified socket).
TEST_F(BpfEgressTest, FastPathFollowsSlotAndTunnels) {
  constexpr std::uint32_t kSlot = 5;
  constexpr std::uint64_t kAppCgroup = 4242;  // ks_cgroups entry only: no real cgroup needed
  const std::uint32_t mark = KS_MARK_BASE | kSlot << KS_MARK_SLOT_SHIFT | kProfile;
  const Bytes frame = V4(Ipv4("10.1.0.2", "203.0.113.9", kUdp, Udp(40000, 443)));
  const std::uint64_t len = frame.size() - ETH_HLEN;
  const Case through_tunnel = {"slot's mark via the tunnel", frame, Dev::kTunnel, Verdict::kPass,
                               mark};
  const Case dropped = {"slot's mark via the tunnel, full path", frame, Dev::kTunnel,
                        Verdict::kDrop, mark};
  const Case other_device = {"slot's mark via another device", frame, Dev::kOther, Verdict::kDrop,
                             mark};
  const Case no_slot = {"the profile's mark without a slot", frame, Dev::kTunnel, Verdict::kDrop,
                        KS_MARK_BASE | kProfile};
  const Case other_profile = {"the slot with another profile's id", frame, Dev::kTunnel,
                              Verdict::kDrop, KS_MARK_BASE | kSlot << KS_MARK_SLOT_SHIFT | 2};

  RunTable(egress_.get(), {dropped});  // before ksd gave the slot to anyone
  enforcement_->reset_app_counters(kSlot);
  enforcement_->set_cgroup(kAppCgroup, kProfile, kSlot);
  RunTable(egress_.get(),
           {through_tunnel, through_tunnel, through_tunnel, other_device, no_slot, other_profile});
  Counters app = enforcement_->counters_of(kAppCgroup, kSlot);
  EXPECT_EQ(app.allowed_packets, 3u) << "the app's counters: the slot's rows";
  EXPECT_EQ(app.allowed_bytes, 3 * len);
  EXPECT_EQ(enforcement_->profile_counters(kProfile).allowed_packets, 3u)
      << "the profile's totals add its slots' rows";
  EXPECT_EQ(enforcement_->totals().allowed_packets, 3u);
  EXPECT_EQ(enforcement_->totals().blocked_packets, 4u);

  // The tunnel goes away: the next packet takes the full path; it comes back: passes again.
  enforcement_->replace_tunnels({});
  RunTable(egress_.get(), {dropped});
  enforcement_->replace_tunnels({{{kProfile, tunnel_ifindex_}, KS_FAMILY_V4 | KS_FAMILY_V6}});
  RunTable(egress_.get(), {through_tunnel});
  EXPECT_EQ(enforcement_->counters_of(kAppCgroup, kSlot).allowed_packets, 4u);

  // The app ends and its slot goes to an app of another profile: the old mark passes no
  // more, the new app starts from zero, and the profile keeps what the slot counted.
  enforcement_->remove_cgroup(kAppCgroup);
  enforcement_->reset_app_counters(kSlot);
  EXPECT_EQ(enforcement_->counters_of(kAppCgroup, kSlot).allowed_packets, 0u);
  EXPECT_EQ(enforcement_->profile_counters(kProfile).allowed_packets, 4u)
      << "the retired row keeps the profile's totals";
  enforcement_->set_cgroup(kAppCgroup + 1, 2, kSlot);
  RunTable(egress_.get(), {dropped});
  EXPECT_EQ(enforcement_->totals().allowed_packets, 4u);
}

// Updating the maps between runs is seen by the very next run (no caching in the
// programs), and with no profile, no tunnel and no LAN at all the verdicts are the same:
// without a classified socket the maps cannot grant anything.
TEST_F(BpfEgressTest, VerdictsIndependentOfMapsWithoutSocket) {
  enforcement_->write_profile(kProfile, ks_profile{});
  enforcement_->replace_tunnels({});
  enforcement_->replace_lan({});
  EXPECT_TRUE(enforcement_->tunnels().empty());
  RunTable(egress_.get(), EgressCases());
  RunTable(ingress_.get(), IngressCases());
}

// Linux 6.18 refuses (EINVAL, before the program runs) a frame whose EtherType says
// IPv4 or IPv6 but whose network part is shorter than the fixed header: 20 bytes for
// IPv4 (whatever ihl says), 40 for IPv6. So the programs' "IP header unreadable" path
// cannot be reached through BPF_PROG_TEST_RUN on this kernel; a real skb of that kind
// never reaches cgroup_skb either (the IP layer built it). Other EtherTypes may be as
// short as the Ethernet header.
TEST_F(BpfEgressTest, KernelRefusesShortNetworkHeaders) {
  const Bytes v4 = V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, kCanary)));
  const Bytes v6 = V6(Ipv6("::1", "::1", kUdp, Udp(40000, kCanary)));
  struct Short {
    const char* description;
    Bytes frame;
  };
  const Short refused[] = {
      {"IPv4 EtherType, no network header", Frame(ETH_P_IP, {})},
      {"IPv4 header cut to 10 bytes", Truncated(v4, ETH_HLEN + 10)},
      {"IPv4 header cut to 19 bytes", Truncated(v4, ETH_HLEN + 19)},
      {"IPv6 EtherType, no network header", Frame(ETH_P_IPV6, {})},
      {"IPv6 header cut to 20 bytes", Truncated(v6, ETH_HLEN + 20)},
      {"IPv6 header cut to 39 bytes", Truncated(v6, ETH_HLEN + 39)},
  };
  for (const Short& s : refused) {
    SCOPED_TRACE(s.description);
    for (int fd : {egress_.get(), ingress_.get()}) {
      for (Dev dev : {Dev::kLoopback, Dev::kOther}) {
        __sk_buff ctx{};
        ctx.ifindex = IfindexOf(dev);
        EXPECT_EQ(TestRun(fd, s.frame, &ctx).error, EINVAL);
      }
    }
  }
  EXPECT_EQ(enforcement_->totals().allowed_packets, 0u) << "a refused frame reached a program";
  EXPECT_EQ(enforcement_->totals().blocked_packets, 0u) << "a refused frame reached a program";

  // Exactly the fixed header is enough (the canary's port is then unreadable: pass).
  const Case boundary[] = {
      {"IPv4 header of exactly 20 bytes", Truncated(v4, ETH_HLEN + 20), Dev::kLoopback,
       Verdict::kPass},
      {"IPv6 header of exactly 40 bytes", Truncated(v6, ETH_HLEN + 40), Dev::kLoopback,
       Verdict::kPass},
      {"IPv4 header of exactly 20 bytes, non-loopback", Truncated(v4, ETH_HLEN + 20), Dev::kOther,
       Verdict::kDrop},
  };
  for (const Case& c : boundary) {
    SCOPED_TRACE(c.description);
    const TestRunResult r = RunCase(egress_.get(), c);
    ASSERT_EQ(r.error, 0) << std::strerror(r.error);
    EXPECT_EQ(r.retval, c.expected == Verdict::kPass ? 1u : 0u);
  }
}

// What the kernel accepts as input for a cgroup_skb test run (see the top comment).
TEST_F(BpfEgressTest, KernelInputRulesForCgroupSkbTestRun) {
  const Bytes loopback_udp = V4(Ipv4("127.0.0.1", "127.0.0.1", kUdp, Udp(40000, 53)));

  // Shorter than an Ethernet header: refused, the program does not run.
  for (std::size_t size : {0u, 1u, 13u}) {
    SCOPED_TRACE("frame of " + std::to_string(size) + " bytes");
    const Bytes tiny(size, 0);
    LIBBPF_OPTS(bpf_test_run_opts, opts);
    opts.data_in = size ? tiny.data() : nullptr;
    opts.data_size_in = static_cast<std::uint32_t>(size);
    EXPECT_NE(bpf_prog_test_run_opts(egress_.get(), &opts), 0);
    EXPECT_EQ(errno, EINVAL);
  }

  // The protocol is not an input; neither is len.
  {
    __sk_buff ctx{};
    ctx.protocol = htons(ETH_P_IP);
    EXPECT_EQ(TestRun(egress_.get(), loopback_udp, &ctx).error, EINVAL) << "ctx_in.protocol";
  }
  {
    __sk_buff ctx{};
    ctx.len = 42;
    EXPECT_EQ(TestRun(egress_.get(), loopback_udp, &ctx).error, EINVAL) << "ctx_in.len";
  }

  // ifindex must name a device of the caller's network namespace.
  {
    __sk_buff ctx{};
    ctx.ifindex = 999999;
    EXPECT_EQ(TestRun(egress_.get(), loopback_udp, &ctx).error, ENODEV) << "unknown ifindex";
  }

  // Allowed fields run; the output frame has the Ethernet header back (zeroed), so the
  // program itself saw the packet from the network header on.
  {
    __sk_buff ctx{};
    ctx.ifindex = KS_LOOPBACK_IFINDEX;
    ctx.mark = 7;
    ctx.priority = 3;
    const TestRunResult r = TestRun(egress_.get(), loopback_udp, &ctx);
    EXPECT_EQ(r.error, 0) << std::strerror(r.error);
    EXPECT_EQ(r.retval, 1u);
    Bytes want = loopback_udp;
    std::fill(want.begin(), want.begin() + ETH_HLEN, std::uint8_t{0});
    EXPECT_EQ(r.data_out, want) << "expected the input with a zeroed Ethernet header";
  }

  // Nothing refused above reached the programs' counters; the one run did.
  const Counters totals = enforcement_->totals();
  EXPECT_EQ(totals.allowed_packets, 1u);
  EXPECT_EQ(totals.allowed_bytes, loopback_udp.size() - ETH_HLEN);
  EXPECT_EQ(totals.blocked_packets, 0u);
}

}  // namespace
}  // namespace ks
