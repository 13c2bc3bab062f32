#include "killswitch/config.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "killswitch/error.hpp"

namespace ks {
namespace {

constexpr const char* kPath = "/etc/killswitch/test.toml";

// Parses text that must be rejected and returns the error message.
std::string error_of(std::string_view toml) {
  try {
    parse_config(toml, kPath);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted:\n" << toml;
  return {};
}

// Every configuration error starts with "PATH:LINE: KEY: "; the rest is free text, of
// which the test pins the part that tells the user what is wrong.
void expect_error(std::string_view toml, int line, const std::string& key,
                  const std::string& fragment) {
  const std::string message = error_of(toml);
  const std::string prefix = std::string(kPath) + ":" + std::to_string(line) + ": " + key + ": ";
  EXPECT_EQ(message.rfind(prefix, 0), 0u)
      << "message: " << message << "\nwanted prefix: " << prefix;
  EXPECT_NE(message.find(fragment), std::string::npos)
      << "message: " << message << "\nwanted: " << fragment;
}

std::string hex(const std::array<std::uint8_t, 16>& bytes, std::size_t n) {
  std::string out;
  char buf[4];
  for (std::size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", bytes[i]);
    out += buf;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Valid files

TEST(ConfigParse, SpecExample) {
  const Config config =
      parse_config(R"([profiles.default]          # the profile ksrun uses without --profile
tunnels   = ["wg0"]         # interface names protected traffic may leave through
dns       = ["10.99.0.1"]   # resolvers reached through the tunnel; protected DNS goes only here
allow_lan = []              # CIDRs a protected app may reach outside the tunnel (explicit only)
)",
                   kPath);
  EXPECT_EQ(config.path, kPath);
  ASSERT_EQ(config.profiles.size(), 1u);
  const Profile& p = config.profiles[0];
  EXPECT_EQ(p.name, "default");
  EXPECT_EQ(p.tunnels, std::vector<std::string>{"wg0"});
  ASSERT_EQ(p.dns.size(), 1u);
  EXPECT_EQ(p.dns[0].family, AF_INET);
  EXPECT_EQ(hex(p.dns[0].bytes, 16), "0a630001000000000000000000000000");
  EXPECT_EQ(p.dns[0].text, "10.99.0.1");
  EXPECT_TRUE(p.allow_lan.empty());
}

TEST(ConfigParse, HeaderExampleWithLan) {
  const Config config = parse_config(R"([profiles.default]
tunnels   = ["wg0"]
dns       = ["10.99.0.1"]
allow_lan = ["192.168.1.0/24"]
)",
                                     kPath);
  ASSERT_EQ(config.profiles.size(), 1u);
  ASSERT_EQ(config.profiles[0].allow_lan.size(), 1u);
  const Cidr& lan = config.profiles[0].allow_lan[0];
  EXPECT_EQ(lan.address.family, AF_INET);
  EXPECT_EQ(hex(lan.address.bytes, 4), "c0a80100");
  EXPECT_EQ(lan.prefix_len, 24);
  EXPECT_EQ(lan.text, "192.168.1.0/24");
}

TEST(ConfigParse, OnlyTunnelsIsEnough) {
  const Config config = parse_config("[profiles.default]\ntunnels = [\"wg0\"]\n", kPath);
  ASSERT_EQ(config.profiles.size(), 1u);
  EXPECT_TRUE(config.profiles[0].dns.empty());
  EXPECT_TRUE(config.profiles[0].allow_lan.empty());
}

TEST(ConfigParse, MultipleProfilesKeepFileOrder) {
  // Deliberately not alphabetical: toml++ tables are sorted maps.
  const Config config = parse_config(R"([profiles.zulu]
tunnels = ["wg2", "wg1"]

[profiles.default]
tunnels = ["wg0"]
dns = ["10.99.0.1", "fd00::53"]
allow_lan = ["10.0.0.0/8", "fe80::/10", "192.168.7.7"]

[profiles.alpha_2]
tunnels = ["tun0"]
)",
                                     kPath);
  ASSERT_EQ(config.profiles.size(), 3u);
  EXPECT_EQ(config.profiles[0].name, "zulu");
  EXPECT_EQ(config.profiles[1].name, "default");
  EXPECT_EQ(config.profiles[2].name, "alpha_2");
  // Tunnels keep their order of preference.
  EXPECT_EQ(config.profiles[0].tunnels, (std::vector<std::string>{"wg2", "wg1"}));

  const Profile& d = config.profiles[1];
  ASSERT_EQ(d.dns.size(), 2u);
  EXPECT_EQ(d.dns[1].family, AF_INET6);
  EXPECT_EQ(hex(d.dns[1].bytes, 16), "fd000000000000000000000000000053");
  ASSERT_EQ(d.allow_lan.size(), 3u);
  EXPECT_EQ(d.allow_lan[1].address.family, AF_INET6);
  EXPECT_EQ(d.allow_lan[1].prefix_len, 10);
  EXPECT_EQ(d.allow_lan[2].prefix_len, 32);  // bare address
}

TEST(ConfigParse, InlineAndDottedFormsKeepFileOrder) {
  const Config config = parse_config(R"(profiles.b.tunnels = ["wg0"]
profiles.a = { tunnels = ["wg1"] }
)",
                                     kPath);
  ASSERT_EQ(config.profiles.size(), 2u);
  EXPECT_EQ(config.profiles[0].name, "b");
  EXPECT_EQ(config.profiles[1].name, "a");
}

TEST(ConfigParse, FindProfile) {
  const Config config = parse_config(
      "[profiles.default]\ntunnels = [\"wg0\"]\n[profiles.work]\ntunnels = "
      "[\"wg1\"]\n",
      kPath);
  const Profile* work = config.find_profile("work");
  ASSERT_NE(work, nullptr);
  EXPECT_EQ(work->tunnels, std::vector<std::string>{"wg1"});
  const Profile* def = config.find_profile(kDefaultProfile);
  ASSERT_NE(def, nullptr);
  EXPECT_EQ(def->name, "default");
  EXPECT_EQ(config.find_profile("missing"), nullptr);
  EXPECT_EQ(config.find_profile(""), nullptr);
  EXPECT_EQ(config.find_profile("Work"), nullptr);  // case-sensitive
}

TEST(ConfigParse, MaxCountsAreAccepted) {
  const Config config = parse_config(R"([profiles.default]
tunnels = ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"]
dns = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
)",
                                     kPath);
  EXPECT_EQ(config.profiles[0].tunnels.size(), kMaxTunnelsPerProfile);
  EXPECT_EQ(config.profiles[0].dns.size(), kMaxDnsPerProfile);
}

TEST(ConfigParse, SameTunnelInTwoProfilesIsFine) {
  const Config config =
      parse_config("[profiles.a]\ntunnels = [\"wg0\"]\n[profiles.b]\ntunnels = [\"wg0\"]\n", kPath);
  EXPECT_EQ(config.profiles.size(), 2u);
}

// ---------------------------------------------------------------------------------------
// Whole-file errors

TEST(ConfigErrors, TomlSyntaxErrorHasLineAndColumn) {
  const std::string message = error_of("[profiles.default]\ntunnels = [\"wg0\"\n");
  EXPECT_EQ(message.rfind(std::string(kPath) + ":2:", 0), 0u) << message;
  EXPECT_NE(message.find(": TOML syntax error: "), std::string::npos) << message;
}

TEST(ConfigErrors, TomlSyntaxErrorColumnIsExact) {
  const std::string message = error_of("[profiles.default]\ntunnels = @\n");
  EXPECT_EQ(message.rfind(std::string(kPath) + ":2:11: TOML syntax error: ", 0), 0u) << message;
}

TEST(ConfigErrors, DuplicateKeyIsASyntaxError) {
  const std::string message =
      error_of("[profiles.default]\ntunnels = [\"wg0\"]\ntunnels = [\"wg1\"]\n");
  EXPECT_EQ(message.rfind(std::string(kPath) + ":3:", 0), 0u) << message;
  EXPECT_NE(message.find("TOML syntax error"), std::string::npos) << message;
}

TEST(ConfigErrors, EmptyFile) { expect_error("", 1, "profiles", "no profiles defined"); }

TEST(ConfigErrors, EmptyProfilesTable) {
  expect_error("# nothing yet\n[profiles]\n", 2, "profiles", "no profiles defined");
}

TEST(ConfigErrors, UnknownTopLevelKey) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\n[settings]\nverbose = true\n", 3,
               "settings", "unknown key");
}

TEST(ConfigErrors, UnknownTopLevelScalar) {
  expect_error("log_level = \"debug\"\n[profiles.default]\ntunnels = [\"wg0\"]\n", 1, "log_level",
               "unknown key");
}

TEST(ConfigErrors, UnknownKeyInProfile) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\ntunnel = [\"wg1\"]\n", 3,
               "profiles.default.tunnel", "unknown key (expected tunnels, dns or allow_lan)");
}

TEST(ConfigErrors, UnknownSubtableInProfile) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\n\n[profiles.default.extra]\nx = 1\n", 4,
               "profiles.default.extra", "unknown key");
}

TEST(ConfigErrors, ProfilesNotATable) {
  expect_error("profiles = [\"default\"]\n", 1, "profiles",
               "expected a table of profiles ([profiles.NAME]), got an array");
}

TEST(ConfigErrors, ProfilesArrayOfTables) {
  expect_error("[[profiles]]\ntunnels = [\"wg0\"]\n", 1, "profiles", "expected a table");
}

TEST(ConfigErrors, ProfileNotATable) {
  expect_error("[profiles]\ndefault = \"wg0\"\n", 2, "profiles.default",
               "expected a table ([profiles.default]), got a string");
}

TEST(ConfigErrors, ProfileNameWithDash) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\n[profiles.my-vpn]\ntunnels = [\"wg1\"]\n",
               3, "profiles.my-vpn", "invalid profile name");
}

TEST(ConfigErrors, ProfileNameTooLongOrOdd) {
  expect_error("[profiles.abcdefghijabcdefghijabcdefghijab]\ntunnels = [\"wg0\"]\n", 1,
               "profiles.abcdefghijabcdefghijabcdefghijab", "invalid profile name");
  // Quoted keys are shown quoted, with control characters escaped.
  expect_error("[profiles.\"a b\"]\ntunnels = [\"wg0\"]\n", 1, "profiles.\"a b\"",
               "invalid profile name");
  expect_error("[profiles.\"\\u0007\"]\ntunnels = [\"wg0\"]\n", 1, "profiles.\"\\u0007\"",
               "invalid profile name");
}

TEST(ConfigErrors, TooManyProfiles) {
  std::string toml;
  for (std::size_t i = 0; i <= kMaxProfiles; ++i) {
    toml += "[profiles.p" + std::to_string(i) + "]\ntunnels = [\"wg0\"]\n";
  }
  // The 64th profile (p63) starts on line 2 * 63 + 1.
  expect_error(toml, 127, "profiles.p63", "too many profiles (at most 63)");
}

// ---------------------------------------------------------------------------------------
// tunnels

TEST(ConfigErrors, TunnelsMissing) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\n\n[profiles.work]\ndns = [\"10.0.0.1\"]\n",
               4, "profiles.work.tunnels", "required key is missing");
}

TEST(ConfigErrors, TunnelsEmpty) {
  expect_error("[profiles.default]\ndns = []\ntunnels = []\n", 3, "profiles.default.tunnels",
               "at least one tunnel");
}

TEST(ConfigErrors, TunnelsNotAnArray) {
  expect_error("[profiles.default]\ntunnels = \"wg0\"\n", 2, "profiles.default.tunnels",
               "expected an array of strings, got a string");
}

TEST(ConfigErrors, TunnelsIntegerElementOnItsOwnLine) {
  expect_error("[profiles.default]\ntunnels = [\n  \"wg0\",\n  7,\n]\n", 4,
               "profiles.default.tunnels",
               "expected an array of strings, but entry 2 is an integer");
}

TEST(ConfigErrors, TunnelsBadInterfaceName) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\", \"eth/0\"]\n", 2,
               "profiles.default.tunnels", "\"eth/0\" is not a valid interface name");
  expect_error("[profiles.default]\ntunnels = [\"a-very-long-name0\"]\n", 2,
               "profiles.default.tunnels", "is not a valid interface name");
  expect_error("[profiles.default]\ntunnels = [\"\"]\n", 2, "profiles.default.tunnels",
               "\"\" is not a valid interface name");
  expect_error("[profiles.default]\ntunnels = [\"wg\\t0\"]\n", 2, "profiles.default.tunnels",
               "\"wg\\u00090\" is not a valid interface name");
}

TEST(ConfigErrors, TunnelsDuplicate) {
  expect_error("[profiles.default]\ntunnels = [\n  \"wg0\",\n  \"wg1\",\n  \"wg0\",\n]\n", 5,
               "profiles.default.tunnels", "\"wg0\" is listed twice");
}

TEST(ConfigErrors, TunnelsTooMany) {
  expect_error(
      "[profiles.default]\ntunnels = [\"t1\", \"t2\", \"t3\", \"t4\", \"t5\", \"t6\", \"t7\", "
      "\"t8\", "
      "\"t9\"]\n",
      2, "profiles.default.tunnels", "at most 8 tunnels per profile, got 9");
}

// ---------------------------------------------------------------------------------------
// dns

TEST(ConfigErrors, DnsNotAnArray) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\ndns = \"10.99.0.1\"\n", 3,
               "profiles.default.dns", "expected an array of strings, got a string");
}

TEST(ConfigErrors, DnsWrongElementType) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\ndns = [true]\n", 3, "profiles.default.dns",
               "entry 1 is a boolean");
}

TEST(ConfigErrors, DnsBadAddress) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\ndns = [\"10.99.0.256\"]\n", 3,
               "profiles.default.dns", "\"10.99.0.256\" is not an IPv4 or IPv6 address");
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\ndns = [\"dns.example\"]\n", 3,
               "profiles.default.dns", "is not an IPv4 or IPv6 address");
}

TEST(ConfigErrors, DnsZoneId) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\ndns = [\"fe80::1%wg0\"]\n", 3,
               "profiles.default.dns", "has a zone id");
}

TEST(ConfigErrors, DnsTooMany) {
  expect_error(
      "[profiles.default]\ntunnels = [\"wg0\"]\ndns = [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\", "
      "\"10.0.0.4\", \"10.0.0.5\"]\n",
      3, "profiles.default.dns", "at most 4 resolvers per profile, got 5");
}

TEST(ConfigErrors, DnsDuplicate) {
  expect_error(
      "[profiles.default]\ntunnels = [\"wg0\"]\ndns = [\n  \"fd00::53\",\n  \"fd00:0::53\",\n]\n",
      5, "profiles.default.dns", "\"fd00:0::53\" is listed twice (also as \"fd00::53\")");
}

TEST(ConfigErrors, DnsDuplicateViaIpv4MappedForm) {
  // The BPF side stores IPv4 resolvers as ::ffff:a.b.c.d, so these are one resolver.
  expect_error(
      "[profiles.default]\ntunnels = [\"wg0\"]\ndns = [\"10.0.0.1\", \"::ffff:10.0.0.1\"]\n", 3,
      "profiles.default.dns", "is listed twice");
}

// ---------------------------------------------------------------------------------------
// allow_lan

TEST(ConfigErrors, AllowLanNotAnArray) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\nallow_lan = 24\n", 3,
               "profiles.default.allow_lan", "expected an array of strings, got an integer");
}

TEST(ConfigErrors, AllowLanHostBitsSet) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\nallow_lan = [\"192.168.1.5/24\"]\n", 3,
               "profiles.default.allow_lan",
               "192.168.1.5/24 has host bits set; did you mean 192.168.1.0/24?");
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\nallow_lan = [\"fd00::1/64\"]\n", 3,
               "profiles.default.allow_lan", "did you mean fd00::/64?");
}

TEST(ConfigErrors, AllowLanBadCidr) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\nallow_lan = [\"192.168.1.0/33\"]\n", 3,
               "profiles.default.allow_lan",
               "prefix length must be a number from 0 to 32 for IPv4");
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\nallow_lan = [\"lan\"]\n", 3,
               "profiles.default.allow_lan", "\"lan\" is not a CIDR");
  expect_error(
      "[profiles.default]\ntunnels = [\"wg0\"]\nallow_lan = [\n  \"10.0.0.0/8\",\n  "
      "\"fe80::/129\",\n]\n",
      5, "profiles.default.allow_lan", "from 0 to 128 for IPv6");
}

TEST(ConfigErrors, AllowLanDefaultRouteRefused) {
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\nallow_lan = [\"0.0.0.0/0\"]\n", 3,
               "profiles.default.allow_lan", "would let all traffic bypass the tunnel");
  expect_error("[profiles.default]\ntunnels = [\"wg0\"]\nallow_lan = [\"::/0\"]\n", 3,
               "profiles.default.allow_lan", "would let all traffic bypass the tunnel");
}

TEST(ConfigErrors, AllowLanDuplicate) {
  expect_error(
      "[profiles.default]\ntunnels = [\"wg0\"]\nallow_lan = [\"10.0.0.0/8\", \"10.0.0.0/8\"]\n", 3,
      "profiles.default.allow_lan", "is listed twice");
}

TEST(ConfigErrors, FirstProblemInFileIsReported) {
  // Both profiles are wrong; the one written first is named even though toml++ would
  // iterate "alpha" first.
  expect_error("[profiles.zulu]\ntunnels = []\n[profiles.alpha]\ntunnels = 1\n", 2,
               "profiles.zulu.tunnels", "at least one tunnel");
}

// ---------------------------------------------------------------------------------------
// Validators

TEST(InterfaceName, Valid) {
  for (const char* name :
       {"wg0", "tun0", "e", "eth0.100", "br-lan", "veth_1", "abcdefghijklmno", "wg@home", "..."}) {
    EXPECT_TRUE(is_valid_interface_name(name)) << name;
  }
}

TEST(InterfaceName, Invalid) {
  using namespace std::string_view_literals;
  for (std::string_view name :
       {""sv, "."sv, ".."sv, "abcdefghijklmnop"sv, "eth/0"sv, "wg:0"sv, "wg 0"sv, "wg\t0"sv,
        "wg\n"sv, "wg\x7f"sv, "wg\0"sv, "wg\xa0"sv, " wg0"sv}) {
    EXPECT_FALSE(is_valid_interface_name(name)) << name;
  }
}

TEST(ProfileName, Valid) {
  for (const char* name :
       {"default", "work", "A", "_", "vpn_2", "abcdefghijabcdefghijabcdefghija"}) {
    EXPECT_TRUE(is_valid_profile_name(name)) << name;
  }
}

TEST(ProfileName, Invalid) {
  for (const char* name :
       {"", "my-vpn", "a b", "a.b", "é", "a/b", "abcdefghijabcdefghijabcdefghijab"}) {
    EXPECT_FALSE(is_valid_profile_name(name)) << name;
  }
}

TEST(IpAddress, ParsesIpv4) {
  const auto a = parse_ip_address("192.0.2.1");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->family, AF_INET);
  EXPECT_EQ(hex(a->bytes, 16), "c0000201000000000000000000000000");
  EXPECT_EQ(a->text, "192.0.2.1");
}

TEST(IpAddress, ParsesIpv6) {
  const auto a = parse_ip_address("2001:db8::1");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->family, AF_INET6);
  EXPECT_EQ(hex(a->bytes, 16), "20010db8000000000000000000000001");
  const auto mapped = parse_ip_address("::ffff:10.0.0.1");
  ASSERT_TRUE(mapped);
  EXPECT_EQ(mapped->family, AF_INET6);  // kept as written
  EXPECT_EQ(hex(mapped->bytes, 16), "00000000000000000000ffff0a000001");
}

TEST(IpAddress, Rejects) {
  using namespace std::string_view_literals;
  for (std::string_view text : {""sv, "10.0.0"sv, "10.1"sv, "10.0.0.256"sv, "010.0.0.1"sv,
                                " 10.0.0.1"sv, "10.0.0.1 "sv, "10.0.0.1/32"sv, "fe80::1%eth0"sv,
                                "2001:db8::1::2"sv, "example.com"sv, "10.0.0.1\0x"sv, "::g"sv}) {
    EXPECT_FALSE(parse_ip_address(text)) << text;
  }
}

TEST(Cidr, Parses) {
  auto c = parse_cidr("10.0.0.0/8");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->address.family, AF_INET);
  EXPECT_EQ(hex(c->address.bytes, 4), "0a000000");
  EXPECT_EQ(c->prefix_len, 8);
  EXPECT_EQ(c->text, "10.0.0.0/8");
  EXPECT_EQ(c->address.text, "10.0.0.0");

  c = parse_cidr("fe80::/10");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->address.family, AF_INET6);
  EXPECT_EQ(c->prefix_len, 10);

  c = parse_cidr("0.0.0.0/0");  // valid CIDR; only allow_lan refuses it
  ASSERT_TRUE(c);
  EXPECT_EQ(c->prefix_len, 0);

  c = parse_cidr("::ffff:192.168.0.0/112");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->address.family, AF_INET6);
  EXPECT_EQ(c->prefix_len, 112);
}

TEST(Cidr, BareAddressIsAHost) {
  auto c = parse_cidr("192.168.1.5");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->prefix_len, 32);
  c = parse_cidr("2001:db8::5");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->prefix_len, 128);
}

TEST(Cidr, PrefixLengthBounds) {
  EXPECT_TRUE(parse_cidr("192.168.1.1/32"));
  EXPECT_FALSE(parse_cidr("192.168.1.1/33"));
  EXPECT_TRUE(parse_cidr("2001:db8::1/128"));
  EXPECT_FALSE(parse_cidr("2001:db8::1/129"));
  for (const char* text : {"10.0.0.0/", "10.0.0.0/-8", "10.0.0.0/+8", "10.0.0.0/08", "10.0.0.0/8 ",
                           "10.0.0.0/8/8", "10.0.0.0/x", "10.0.0.0/1000", "/8"}) {
    EXPECT_FALSE(parse_cidr(text)) << text;
  }
}

TEST(Cidr, HostBitsRejectedWithSuggestion) {
  std::string why;
  EXPECT_FALSE(parse_cidr("192.168.1.5/24", &why));
  EXPECT_EQ(why, "192.168.1.5/24 has host bits set; did you mean 192.168.1.0/24?");
  EXPECT_FALSE(parse_cidr("10.255.0.0/9", &why));
  EXPECT_EQ(why, "10.255.0.0/9 has host bits set; did you mean 10.128.0.0/9?");
  EXPECT_FALSE(parse_cidr("2001:db8::1/32", &why));
  EXPECT_EQ(why, "2001:db8::1/32 has host bits set; did you mean 2001:db8::/32?");
  EXPECT_FALSE(parse_cidr("1.0.0.0/0", &why));
  EXPECT_EQ(why, "1.0.0.0/0 has host bits set; did you mean 0.0.0.0/0?");
}

TEST(Cidr, WhyNotForGarbage) {
  std::string why;
  EXPECT_FALSE(parse_cidr("fe80::%eth0/64", &why));
  EXPECT_NE(why.find("zone id"), std::string::npos) << why;
  EXPECT_FALSE(parse_cidr("nope/8", &why));
  EXPECT_NE(why.find("\"nope/8\" is not a CIDR"), std::string::npos) << why;
}

// ---------------------------------------------------------------------------------------
// load_config

class LoadConfig : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/ks-config-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr) << std::strerror(errno);
    dir_ = pattern;
  }
  void TearDown() override {
    if (!file_.empty()) ::unlink(file_.c_str());
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  std::string write(const std::string& text) {
    file_ = dir_ + "/config.toml";
    std::ofstream(file_) << text;
    return file_;
  }

  std::string dir_;
  std::string file_;
};

TEST_F(LoadConfig, ReadsFile) {
  const std::string path =
      write("[profiles.default]\ntunnels = [\"wg0\"]\ndns = [\"10.99.0.1\"]\n");
  const Config config = load_config(path);
  EXPECT_EQ(config.path, path);
  ASSERT_NE(config.find_profile("default"), nullptr);
  EXPECT_EQ(config.find_profile("default")->dns.size(), 1u);
}

TEST_F(LoadConfig, ErrorsNameTheRealPath) {
  const std::string path = write("[profiles.default]\ntunnels = [\"wg0\"]\nbogus = 1\n");
  try {
    load_config(path);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path +
                                         ":3: profiles.default.bogus: unknown key (expected "
                                         "tunnels, dns or allow_lan)");
  }
}

TEST_F(LoadConfig, MissingFile) {
  const std::string path = dir_ + "/absent.toml";
  try {
    load_config(path);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": cannot read: " + std::strerror(ENOENT));
    EXPECT_EQ(e.sys_errno(), ENOENT);
  }
}

TEST_F(LoadConfig, DirectoryIsNotAFile) {
  try {
    load_config(dir_);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), dir_ + ": cannot read: " + std::strerror(EISDIR));
  }
}

}  // namespace
}  // namespace ks

namespace {

TEST(ConfigWarnings, NamesWhatIsLegalButLikelyWrong) {
  const ks::Config c = ks::parse_config(R"([profiles.work]
tunnels = ["wg0", "tun9"]
[profiles.torrents]
tunnels = ["wg0"]
dns = ["10.99.0.1"]
)",
                                        "/test/config.toml");
  const auto warnings =
      ks::config_warnings(c, [](const std::string& name) { return name == "wg0"; });
  ASSERT_EQ(warnings.size(), 3u);
  EXPECT_NE(warnings[0].find("no profile named \"default\""), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[1].find("profile work has no dns"), std::string::npos) << warnings[1];
  EXPECT_NE(warnings[2].find("profile work: tunnel tun9 does not exist now"), std::string::npos)
      << warnings[2];
}

TEST(ConfigWarnings, NoneForACompleteConfig) {
  const ks::Config c = ks::parse_config(R"([profiles.default]
tunnels = ["wg0"]
dns = ["10.99.0.1"]
)",
                                        "/test/config.toml");
  EXPECT_TRUE(ks::config_warnings(c, [](const std::string&) { return true; }).empty());
}

}  // namespace
