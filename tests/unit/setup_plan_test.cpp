// ksctl setup's decisions, fed with observations of machines we do not have (kernel
// WireGuard, NetworkManager, Mullvad, Tailscale). The lab runs it against a real
// wireguard-go tunnel (tests/lab/test_setup.sh).
#include "killswitch/setup_plan.hpp"

#include <gtest/gtest.h>
#include <net/if.h>
#include <net/if_arp.h>

#include <string>
#include <vector>

namespace ks::setup {
namespace {

LinkState Link(std::uint32_t ifindex, std::string name, std::string kind, bool up = true,
               std::uint16_t type = ARPHRD_NONE) {
  LinkState link;
  link.ifindex = ifindex;
  link.name = std::move(name);
  link.kind = std::move(kind);
  link.type = type;
  link.flags = up ? (IFF_UP | IFF_RUNNING) : 0;
  return link;
}

IpAddress Ip(const char* text) { return *parse_ip_address(text); }

std::vector<std::string> Texts(const std::vector<IpAddress>& addresses) {
  std::vector<std::string> out;
  for (const auto& a : addresses) out.push_back(a.text);
  return out;
}

TEST(SetupParse, WgQuickDnsTakesAddressesOfTheInterfaceSectionOnly) {
  const auto dns = parse_wg_quick_dns(
      "[Interface]\nPrivateKey = x\nAddress = 10.64.0.2/32\ndns = 10.64.0.1, example.com,"
      " fd00::1\nDNS=10.64.0.1\n\n[Peer]\nDNS = 9.9.9.9\nEndpoint = 1.2.3.4:51820\n");
  EXPECT_EQ(Texts(dns), (std::vector<std::string>{"10.64.0.1", "fd00::1"}));
  EXPECT_TRUE(parse_wg_quick_dns("DNS = 1.1.1.1\n").empty()) << "outside [Interface]";
}

TEST(SetupParse, ResolvConfNameservers) {
  const auto dns = parse_resolv_conf_nameservers(
      "# from openvpn\nnameserver 10.8.0.1\nnameserver\tfd00::53 # comment\n"
      "nameservers 1.2.3.4\nnameserver fe80::1%tun0\nsearch vpn\nnameserver 10.8.0.1\n");
  EXPECT_EQ(Texts(dns), (std::vector<std::string>{"10.8.0.1", "fd00::53"}));
}

TEST(SetupParse, ResolvconfRecordNames) {
  EXPECT_TRUE(resolvconf_record_names("tun.wg0", "wg0"));  // wg-quick
  EXPECT_TRUE(resolvconf_record_names("tun0.openvpn", "tun0"));
  EXPECT_TRUE(resolvconf_record_names("tun0", "tun0"));
  EXPECT_FALSE(resolvconf_record_names("tun01", "tun0"));
  EXPECT_FALSE(resolvconf_record_names("eth0.dhclient", "tun0"));
  EXPECT_FALSE(resolvconf_record_names("tun.wg0", ""));
}

TEST(SetupPlan, KernelWireGuardWithResolvedDns) {
  Observations seen;
  seen.links = {Link(1, "lo", ""), Link(2, "eth0", "", true, ARPHRD_ETHER),
                Link(5, "wg0-mullvad", "wireguard")};
  seen.resolved = {{0, Ip("192.168.1.1")}, {5, Ip("10.64.0.1")}, {2, Ip("192.168.1.1")}};
  const auto p = plan_setup(seen, {});
  ASSERT_EQ(p.chosen_tunnels, std::vector<std::string>{"wg0-mullvad"});
  EXPECT_EQ(Texts(p.dns), std::vector<std::string>{"10.64.0.1"}) << "only the tunnel's resolver";
  ASSERT_EQ(p.tunnels.size(), 1u);
  EXPECT_EQ(p.tunnels[0].what, "WireGuard (kernel)");
  EXPECT_NE(p.tunnels[0].why.back().find("Mullvad"), std::string::npos);
  EXPECT_NE(p.toml.find("tunnels   = [\"wg0-mullvad\"]"), std::string::npos) << p.toml;
  EXPECT_NE(p.toml.find("dns       = [\"10.64.0.1\"]"), std::string::npos) << p.toml;
  EXPECT_TRUE(p.warnings.empty());
  EXPECT_NO_THROW(parse_config(p.toml, "x"));
}

TEST(SetupPlan, UserspaceWireGuardIsToldFromOpenVpnByItsSocket) {
  Observations seen;
  seen.links = {Link(3, "wg0", "tun"), Link(4, "tun0", "tun"),
                Link(6, "tap0", "tun", true, ARPHRD_ETHER)};
  seen.wireguard_sockets = {"wg0"};
  seen.resolvconf = {{"tun0.openvpn", "/run/resolvconf/interface/tun0.openvpn", {Ip("10.8.0.1")}}};
  const auto p = plan_setup(seen, {});
  ASSERT_EQ(p.tunnels.size(), 3u);
  EXPECT_EQ(p.tunnels[0].what, "WireGuard (userspace: wireguard-go or boringtun)");
  EXPECT_EQ(p.tunnels[1].what, "tun (OpenVPN or another VPN client)");
  EXPECT_EQ(p.tunnels[2].what, "tap (OpenVPN, bridged)");
  EXPECT_EQ(p.chosen_tunnels, (std::vector<std::string>{"wg0", "tun0", "tap0"}));
  EXPECT_EQ(Texts(p.dns), std::vector<std::string>{"10.8.0.1"});
}

TEST(SetupPlan, WgQuickConfigGivesDnsAndNamesATunnelThatIsDown) {
  Observations seen;
  seen.links = {Link(2, "eth0", "", true, ARPHRD_ETHER)};
  seen.wg_quick = {{"wg1", "/etc/wireguard/wg1.conf", {Ip("10.2.0.1")}}};
  const auto p = plan_setup(seen, {});
  EXPECT_EQ(p.chosen_tunnels, std::vector<std::string>{"wg1"});
  EXPECT_EQ(Texts(p.dns), std::vector<std::string>{"10.2.0.1"});
  ASSERT_EQ(p.warnings.size(), 2u);
  EXPECT_NE(p.warnings[0].find("no tunnel is up"), std::string::npos);
  EXPECT_NE(p.warnings[1].find("wg1 does not exist now"), std::string::npos);
}

TEST(SetupPlan, UpTunnelsWinOverDownOnesAndTailscaleIsLeftOut) {
  Observations seen;
  seen.links = {Link(3, "tailscale0", "tun"), Link(4, "wg0", "wireguard", false),
                Link(5, "tun0", "tun")};
  seen.networkmanager = {{"tun0", "Work VPN", "vpn"}};
  const auto p = plan_setup(seen, {});
  EXPECT_EQ(p.chosen_tunnels, std::vector<std::string>{"tun0"});
  ASSERT_EQ(p.tunnels.size(), 3u);
  EXPECT_EQ(p.tunnels[0].name, "tun0");
  EXPECT_NE(p.tunnels[0].why.back().find("\"Work VPN\""), std::string::npos);
  EXPECT_NE(p.tunnels[1].left_out.find("Tailscale"), std::string::npos);
  EXPECT_EQ(p.tunnels[2].left_out, "not up now while others are");
  ASSERT_FALSE(p.warnings.empty());
  EXPECT_NE(p.warnings.back().find("dns = []"), std::string::npos) << "no resolver: said loudly";
}

TEST(SetupPlan, NamedTunnelsInTheirOrderWithAnEscapedName) {
  Observations seen;
  seen.links = {Link(3, "wg0", "wireguard"), Link(7, "ve\"th\\1", "veth", true, ARPHRD_ETHER)};
  Request request;
  request.profile = "work";
  request.tunnels = {"ve\"th\\1", "wg0"};
  const auto p = plan_setup(seen, request);
  EXPECT_EQ(p.chosen_tunnels, (std::vector<std::string>{"ve\"th\\1", "wg0"}));
  const Config c = parse_config(p.toml, "x");
  ASSERT_EQ(c.profiles.size(), 1u);
  EXPECT_EQ(c.profiles[0].name, "work");
  EXPECT_EQ(c.profiles[0].tunnels, (std::vector<std::string>{"ve\"th\\1", "wg0"}));
}

// Linux takes any bytes but '/', ':' and whitespace in a name; TOML only UTF-8 (found by
// fuzz_setup_files: the planner's own check of what it writes threw).
TEST(SetupPlan, ANameThatIsNotUtf8IsLeftOutNotWritten) {
  Observations seen;
  seen.links = {Link(3, "wg\xff", "wireguard"), Link(4, "wg0", "wireguard")};
  auto p = plan_setup(seen, {});
  EXPECT_EQ(p.chosen_tunnels, std::vector<std::string>{"wg0"});
  ASSERT_EQ(p.tunnels.size(), 2u);
  EXPECT_NE(p.tunnels[1].left_out.find("not UTF-8"), std::string::npos);
  Request named;
  named.tunnels = {"wg\xff"};
  p = plan_setup(seen, named);
  EXPECT_TRUE(p.toml.empty());
  EXPECT_NE(p.warnings.front().find("not UTF-8"), std::string::npos);
}

TEST(SetupPlan, NothingFoundWritesNothing) {
  Observations seen;
  seen.links = {Link(1, "lo", ""), Link(2, "eth0", "", true, ARPHRD_ETHER)};
  seen.not_detected = {"NetworkManager: not running"};
  const auto p = plan_setup(seen, {});
  EXPECT_TRUE(p.toml.empty());
  EXPECT_TRUE(p.chosen_tunnels.empty());
  EXPECT_EQ(p.not_detected, seen.not_detected);
  ASSERT_EQ(p.warnings.size(), 1u);
  EXPECT_NE(p.warnings[0].find("no VPN tunnel found"), std::string::npos);
}

TEST(SetupPlan, ResolversAreCappedAndDeduplicated) {
  Observations seen;
  seen.links = {Link(3, "wg0", "wireguard"), Link(4, "wg1", "wireguard")};
  seen.resolved = {{3, Ip("10.0.0.1")}, {3, Ip("10.0.0.2")}, {4, Ip("10.0.0.1")},
                   {4, Ip("10.0.0.3")}, {4, Ip("10.0.0.4")}, {4, Ip("10.0.0.5")}};
  const auto p = plan_setup(seen, {});
  EXPECT_EQ(Texts(p.dns),
            (std::vector<std::string>{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}));
  EXPECT_NE(p.warnings.front().find("resolvers found"), std::string::npos);
}

}  // namespace
}  // namespace ks::setup
