// LinkWatcher against the real kernel, each test in its own throw-away network namespace.
#include "killswitch/links.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <ostream>
#include <sstream>
#include <string>

#include "killswitch/fd.hpp"
#include "netns_fixture.hpp"

namespace ks {

// So that failing EXPECT_EQ on states and maps print something readable.
void PrintTo(const LinkState& s, std::ostream* os) {
  *os << "{" << s.ifindex << " " << s.name << " flags=0x" << std::hex << s.flags << std::dec
      << (s.usable() ? " usable" : "") << (s.has_ipv4 ? " v4" : "") << (s.has_ipv6 ? " v6" : "")
      << "}";
}

namespace {

using namespace std::chrono_literals;

std::string Describe(const LinkWatcher& w) {
  std::ostringstream os;
  for (const auto& [index, link] : w.links()) {
    PrintTo(link, &os);
    os << " ";
  }
  return os.str();
}

// Feeds the watcher whatever the kernel sends until pred() holds or the deadline passes.
// Carrier changes go through the kernel's linkwatch work (up to a second of batching), so
// the default leaves room for that on a loaded CI machine.
template <typename Pred>
::testing::AssertionResult WaitFor(LinkWatcher& w, const std::string& what, Pred pred,
                                   std::chrono::milliseconds timeout = 3s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return ::testing::AssertionSuccess();
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return ::testing::AssertionFailure()
             << "timed out after " << timeout.count() << " ms waiting for " << what
             << "; watcher state: " << Describe(w);
    }
    pollfd pfd{w.fd(), POLLIN, 0};
    ::poll(&pfd, 1, static_cast<int>(left.count()));
    w.process();
  }
}

::testing::AssertionResult WaitUsable(LinkWatcher& w, const std::string& name, bool usable) {
  return WaitFor(w, name + (usable ? " usable" : " not usable"), [&] {
    const auto link = w.find(name);
    return link && link->usable() == usable;
  });
}

// The strongest check there is: the state built from notifications equals the state of a
// brand-new watcher that just dumped everything (same thread, so same namespace).
::testing::AssertionResult ConvergesToFreshDump(LinkWatcher& w) {
  std::string fresh_state;
  auto result = WaitFor(w, "event-built state to equal a fresh dump", [&] {
    LinkWatcher fresh;
    fresh_state = Describe(fresh);
    return fresh.links() == w.links();
  });
  if (!result) result << "; fresh dump: " << fresh_state;
  return result;
}

// Attaches to an existing tun device as its queue, as wireguard-go does. Must be called on
// the test thread, which lives in the test namespace: the device is looked up in the
// namespace of the opener.
UniqueFd AttachTun(const std::string& name) {
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd) {
    ADD_FAILURE() << "open /dev/net/tun: " << std::strerror(errno);
    return fd;
  }
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
    ADD_FAILURE() << "TUNSETIFF " << name << ": " << std::strerror(errno);
    fd.reset();
  }
  return fd;
}

class LinksTest : public test::NetnsTest {};

TEST_F(LinksTest, InitialStateHasOnlyUsableLoopback) {
  LinkWatcher w;
  // A fresh namespace: the host's interfaces must not be visible.
  ASSERT_EQ(w.links().size(), 1u) << Describe(w);
  const auto lo = w.find("lo");
  ASSERT_TRUE(lo);
  EXPECT_EQ(lo->ifindex, 1u);
  EXPECT_EQ(lo->name, "lo");
  EXPECT_TRUE(lo->usable());
  EXPECT_TRUE(lo->has_ipv4);   // 127.0.0.1
  EXPECT_FALSE(lo->has_ipv6);  // ::1 is host scope
  EXPECT_EQ(w.links().at(1), *lo);
  EXPECT_FALSE(w.find("wgtest0"));
}

TEST_F(LinksTest, ProcessReportsChangesOnly) {
  LinkWatcher w;
  EXPECT_FALSE(w.process()) << "nothing is pending right after construction";

  ASSERT_TRUE(Run("ip tuntap add mode tun name wgtest0"));
  ASSERT_TRUE(WaitFor(w, "wgtest0 to appear", [&] { return w.find("wgtest0").has_value(); }));
  EXPECT_FALSE(w.process()) << "the change was already consumed";

  // The kernel announces an MTU change with RTM_NEWLINK, but nothing we track changed.
  ASSERT_TRUE(Run("ip link set wgtest0 mtu 1400"));
  pollfd pfd{w.fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 2000), 1) << "no notification for the MTU change";
  EXPECT_FALSE(w.process());
  EXPECT_EQ(::poll(&pfd, 1, 0), 0) << "process() left messages unread";

  ASSERT_TRUE(Run("ip link set wgtest0 up"));
  ASSERT_EQ(::poll(&pfd, 1, 2000), 1);
  EXPECT_TRUE(w.process());
  EXPECT_NE(w.find("wgtest0")->flags & IFF_UP, 0u);
}

// Observed on Linux 6.18 (and long before): a tun device without an attached queue has
// no carrier. "ip link set up" gives IFF_UP but not IFF_RUNNING (ip shows NO-CARRIER, state
// DOWN); attaching a queue (what wireguard-go does) turns the carrier on, detaching the
// last queue turns it off again.
TEST_F(LinksTest, TunNeedsAttachedQueueForCarrier) {
  LinkWatcher w;
  ASSERT_TRUE(Run("ip tuntap add mode tun name wgtest0"));
  ASSERT_TRUE(WaitFor(w, "wgtest0 to appear", [&] { return w.find("wgtest0").has_value(); }));
  const auto created = *w.find("wgtest0");
  EXPECT_GT(created.ifindex, 1u);
  EXPECT_EQ(created.flags & IFF_UP, 0u);
  EXPECT_FALSE(created.usable());
  EXPECT_EQ(w.links().at(created.ifindex), created);

  ASSERT_TRUE(Run("ip link set wgtest0 up"));
  ASSERT_TRUE(
      WaitFor(w, "wgtest0 IFF_UP", [&] { return (w.find("wgtest0")->flags & IFF_UP) != 0; }));
  // Eventually: the operational state settles asynchronously (see the veth test).
  EXPECT_TRUE(WaitUsable(w, "wgtest0", false));
  EXPECT_EQ(w.find("wgtest0")->flags & IFF_RUNNING, 0u) << "tun without a queue has carrier?";
  ASSERT_TRUE(ConvergesToFreshDump(w));
  EXPECT_FALSE(w.find("wgtest0")->usable()) << "the kernel itself reports no carrier";

  {
    UniqueFd queue = AttachTun("wgtest0");
    ASSERT_TRUE(queue);
    ASSERT_TRUE(WaitUsable(w, "wgtest0", true));
  }
  ASSERT_TRUE(WaitUsable(w, "wgtest0", false));
  EXPECT_NE(w.find("wgtest0")->flags & IFF_UP, 0u) << "detaching must not set the link down";
  EXPECT_EQ(w.find("wgtest0")->ifindex, created.ifindex);
}

TEST_F(LinksTest, VethUsableOnlyWithBothEndsUp) {
  LinkWatcher w;
  ASSERT_TRUE(Run("ip link add vetha type veth peer name vethb"));
  ASSERT_TRUE(WaitFor(w, "both veth ends", [&] { return w.find("vetha") && w.find("vethb"); }));
  EXPECT_FALSE(w.find("vetha")->usable());

  ASSERT_TRUE(Run("ip link set vetha up"));
  ASSERT_TRUE(WaitFor(w, "vetha IFF_UP", [&] { return (w.find("vetha")->flags & IFF_UP) != 0; }));
  // With its peer down a veth has no carrier. The kernel settles the operational state
  // asynchronously (linkwatch, up to a second later on a slow machine; until then a link
  // without carrier reports IFF_RUNNING): seen on Debian 12's 6.1 under qemu.
  ASSERT_TRUE(ConvergesToFreshDump(w));
  EXPECT_TRUE(WaitUsable(w, "vetha", false));

  ASSERT_TRUE(Run("ip link set vethb up"));
  ASSERT_TRUE(WaitUsable(w, "vetha", true));
  ASSERT_TRUE(WaitUsable(w, "vethb", true));

  // Setting the peer down takes the carrier away from this end while it stays IFF_UP.
  ASSERT_TRUE(Run("ip link set vethb down"));
  ASSERT_TRUE(WaitUsable(w, "vetha", false));
  EXPECT_NE(w.find("vetha")->flags & IFF_UP, 0u);
}

TEST_F(LinksTest, LinkSetDownIsNotUsable) {
  LinkWatcher w;
  ASSERT_TRUE(Run("ip link add vetha type veth peer name vethb"));
  ASSERT_TRUE(Run("ip link set vetha up"));
  ASSERT_TRUE(Run("ip link set vethb up"));
  ASSERT_TRUE(WaitUsable(w, "vetha", true));

  ASSERT_TRUE(Run("ip link set vetha down"));
  ASSERT_TRUE(WaitUsable(w, "vetha", false));
  EXPECT_EQ(w.find("vetha")->flags & IFF_UP, 0u);
  ASSERT_TRUE(ConvergesToFreshDump(w));
}

TEST_F(LinksTest, DeleteAndRecreateGetsNewIfindex) {
  LinkWatcher w;
  ASSERT_TRUE(Run("ip tuntap add mode tun name wgtest0"));
  ASSERT_TRUE(WaitFor(w, "wgtest0 to appear", [&] { return w.find("wgtest0").has_value(); }));
  const std::uint32_t old_index = w.find("wgtest0")->ifindex;

  ASSERT_TRUE(Run("ip link del wgtest0"));
  ASSERT_TRUE(WaitFor(w, "wgtest0 to vanish", [&] { return !w.find("wgtest0"); }));
  EXPECT_EQ(w.links().count(old_index), 0u);
  EXPECT_EQ(w.links().size(), 1u) << Describe(w);

  ASSERT_TRUE(Run("ip tuntap add mode tun name wgtest0"));
  ASSERT_TRUE(WaitFor(w, "wgtest0 to reappear", [&] { return w.find("wgtest0").has_value(); }));
  const auto recreated = *w.find("wgtest0");
  EXPECT_NE(recreated.ifindex, old_index);
  EXPECT_EQ(w.links().count(old_index), 0u);
  EXPECT_EQ(w.links().at(recreated.ifindex).name, "wgtest0");
  ASSERT_TRUE(ConvergesToFreshDump(w));
}

TEST_F(LinksTest, RenameKeepsIfindex) {
  LinkWatcher w;
  ASSERT_TRUE(Run("ip tuntap add mode tun name wgtest0"));
  ASSERT_TRUE(WaitFor(w, "wgtest0 to appear", [&] { return w.find("wgtest0").has_value(); }));
  const std::uint32_t index = w.find("wgtest0")->ifindex;

  ASSERT_TRUE(Run("ip link set wgtest0 name wgrenamed"));
  ASSERT_TRUE(WaitFor(w, "the rename", [&] { return w.find("wgrenamed").has_value(); }));
  EXPECT_FALSE(w.find("wgtest0"));
  EXPECT_EQ(w.find("wgrenamed")->ifindex, index);
  EXPECT_EQ(w.links().size(), 2u) << Describe(w);
  ASSERT_TRUE(ConvergesToFreshDump(w));
}

TEST_F(LinksTest, Ipv4AddressesSetAndClearHasIpv4) {
  LinkWatcher w;
  ASSERT_TRUE(Run("ip tuntap add mode tun name wgtest0"));
  ASSERT_TRUE(WaitFor(w, "wgtest0 to appear", [&] { return w.find("wgtest0").has_value(); }));
  EXPECT_FALSE(w.find("wgtest0")->has_ipv4);

  ASSERT_TRUE(Run("ip addr add 10.66.0.1/32 dev wgtest0"));
  ASSERT_TRUE(WaitFor(w, "has_ipv4", [&] { return w.find("wgtest0")->has_ipv4; }));
  EXPECT_FALSE(w.find("wgtest0")->has_ipv6);

  // Same local address with another prefix is a distinct address to the kernel.
  ASSERT_TRUE(Run("ip addr add 10.66.0.1/24 dev wgtest0"));
  ASSERT_TRUE(Run("ip addr del 10.66.0.1/32 dev wgtest0"));
  ASSERT_TRUE(ConvergesToFreshDump(w));
  EXPECT_TRUE(w.find("wgtest0")->has_ipv4) << "one address is left";

  ASSERT_TRUE(Run("ip addr del 10.66.0.1/24 dev wgtest0"));
  ASSERT_TRUE(WaitFor(w, "has_ipv4 cleared", [&] { return !w.find("wgtest0")->has_ipv4; }));
  ASSERT_TRUE(ConvergesToFreshDump(w));
}

TEST_F(LinksTest, Ipv6CountsOnlyGlobalScope) {
  LinkWatcher w;
  ASSERT_TRUE(Run("ip link add vetha type veth peer name vethb"));
  ASSERT_TRUE(Run("sysctl -qw net.ipv6.conf.vetha.keep_addr_on_down=0"));
  ASSERT_TRUE(Run("ip link set vetha up"));
  ASSERT_TRUE(Run("ip link set vethb up"));
  ASSERT_TRUE(WaitUsable(w, "vetha", true));

  // Link-local only (the kernel's own fe80:: from addrconf may come and go as well).
  ASSERT_TRUE(Run("ip -6 addr add fe80::1/64 dev vetha nodad"));
  ASSERT_TRUE(ConvergesToFreshDump(w));
  EXPECT_FALSE(w.find("vetha")->has_ipv6);
  EXPECT_FALSE(w.find("vetha")->has_ipv4);

  ASSERT_TRUE(Run("ip -6 addr add 2001:db8::1/64 dev vetha nodad"));
  ASSERT_TRUE(WaitFor(w, "has_ipv6", [&] { return w.find("vetha")->has_ipv6; }));
  EXPECT_FALSE(w.find("vetha")->has_ipv4);

  ASSERT_TRUE(Run("ip -6 addr del 2001:db8::1/64 dev vetha"));
  ASSERT_TRUE(WaitFor(w, "has_ipv6 cleared", [&] { return !w.find("vetha")->has_ipv6; }));
  ASSERT_TRUE(ConvergesToFreshDump(w));
  EXPECT_FALSE(w.find("vetha")->has_ipv6) << "fe80::1 is still there and must not count";

  // Observed kernel behaviour worth knowing in ksd: with keep_addr_on_down=0 (the
  // default) setting a link down deletes its IPv6 addresses, while IPv4 ones stay.
  ASSERT_TRUE(Run("ip -6 addr add 2001:db8::1/64 dev vetha nodad"));
  ASSERT_TRUE(Run("ip addr add 10.66.0.1/32 dev vetha"));
  ASSERT_TRUE(WaitFor(w, "v4 and v6",
                      [&] { return w.find("vetha")->has_ipv6 && w.find("vetha")->has_ipv4; }));
  ASSERT_TRUE(Run("ip link set vetha down"));
  ASSERT_TRUE(
      WaitFor(w, "has_ipv6 cleared by link down", [&] { return !w.find("vetha")->has_ipv6; }));
  EXPECT_TRUE(w.find("vetha")->has_ipv4);
  ASSERT_TRUE(ConvergesToFreshDump(w));
}

TEST_F(LinksTest, DeletingLinkDropsItsAddresses) {
  LinkWatcher w;
  ASSERT_TRUE(Run("ip tuntap add mode tun name wgtest0"));
  ASSERT_TRUE(Run("ip addr add 10.66.0.1/32 dev wgtest0"));
  ASSERT_TRUE(Run("ip -6 addr add 2001:db8::1/64 dev wgtest0 nodad"));
  ASSERT_TRUE(Run("ip link set wgtest0 up"));
  ASSERT_TRUE(WaitFor(w, "addresses on wgtest0", [&] {
    const auto l = w.find("wgtest0");
    return l && l->has_ipv4 && l->has_ipv6;
  }));

  ASSERT_TRUE(Run("ip link del wgtest0"));
  ASSERT_TRUE(Run("ip tuntap add mode tun name wgtest0"));
  ASSERT_TRUE(WaitFor(w, "a new, address-less wgtest0", [&] {
    const auto l = w.find("wgtest0");
    return l && !l->has_ipv4 && !l->has_ipv6 && (l->flags & IFF_UP) == 0;
  }));
  ASSERT_TRUE(ConvergesToFreshDump(w));
}

// The bridge driver sends RTM_DELLINK with family AF_BRIDGE when a port leaves a bridge.
// Taking that for a deletion would forget the port's addresses (and briefly the port).
TEST_F(LinksTest, LeavingABridgeIsNotADeletion) {
  LinkWatcher w;
  ASSERT_TRUE(Run("ip link add ksbr0 type bridge"));
  ASSERT_TRUE(Run("ip link add vetha type veth peer name vethb"));
  ASSERT_TRUE(Run("ip addr add 10.66.0.1/32 dev vetha"));
  ASSERT_TRUE(Run("ip link set vetha master ksbr0"));
  ASSERT_TRUE(WaitFor(w, "vetha with its address", [&] {
    const auto l = w.find("vetha");
    return l && l->has_ipv4;
  }));
  const std::uint32_t index = w.find("vetha")->ifindex;

  ASSERT_TRUE(Run("ip link set vetha nomaster"));
  pollfd pfd{w.fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 2000), 1) << "no notification for leaving the bridge";
  w.process();
  const auto l = w.find("vetha");
  ASSERT_TRUE(l);
  EXPECT_EQ(l->ifindex, index);
  EXPECT_TRUE(l->has_ipv4);
  ASSERT_TRUE(ConvergesToFreshDump(w));
}

TEST_F(LinksTest, OverrunTriggersResync) {
  LinkWatcher w;
  // Shrink the event socket's buffer to the kernel minimum (about one notification), so
  // that the burst below overflows it and the kernel reports ENOBUFS.
  const int tiny = 1;
  ASSERT_EQ(::setsockopt(w.fd(), SOL_SOCKET, SO_RCVBUF, &tiny, sizeof tiny), 0);
  constexpr int kLinks = 16;
  for (int i = 0; i < kLinks; ++i) {
    const std::string name = "wgburst" + std::to_string(i);
    ASSERT_TRUE(Run("ip tuntap add mode tun name " + name));
    ASSERT_TRUE(Run("ip addr add 10.66.1." + std::to_string(i + 1) + "/32 dev " + name));
  }
  ASSERT_EQ(w.resync_count(), 0u);
  EXPECT_TRUE(w.process());
  EXPECT_GE(w.resync_count(), 1u) << "the burst did not overrun; the test proves nothing";
  for (int i = 0; i < kLinks; ++i) {
    const auto l = w.find("wgburst" + std::to_string(i));
    ASSERT_TRUE(l) << "wgburst" << i << " lost; state: " << Describe(w);
    EXPECT_TRUE(l->has_ipv4) << l->name;
  }
  EXPECT_FALSE(w.process());
  ASSERT_TRUE(ConvergesToFreshDump(w));
}

TEST_F(LinksTest, ExplicitResyncKeepsExactState) {
  LinkWatcher w;
  ASSERT_TRUE(Run("ip tuntap add mode tun name wgtest0"));
  ASSERT_TRUE(Run("ip addr add 10.66.0.1/32 dev wgtest0"));
  ASSERT_TRUE(WaitFor(w, "wgtest0 with address", [&] {
    const auto l = w.find("wgtest0");
    return l && l->has_ipv4;
  }));
  const auto before = w.links();
  w.resync();
  EXPECT_EQ(w.resync_count(), 1u);
  EXPECT_EQ(w.links(), before);
  EXPECT_FALSE(w.process());

  // Changes queued while nobody reads are neither lost nor duplicated by a resync.
  ASSERT_TRUE(Run("ip link set wgtest0 name wgrenamed"));
  w.resync();
  EXPECT_TRUE(w.find("wgrenamed"));
  EXPECT_FALSE(w.find("wgtest0"));
  EXPECT_FALSE(w.process());
  ASSERT_TRUE(ConvergesToFreshDump(w));
}

}  // namespace
}  // namespace ks
