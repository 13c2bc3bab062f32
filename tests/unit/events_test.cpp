// Decoding of blocked-attempt events (what `ksctl events` shows).
#include "killswitch/events.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstring>

#include "killswitch/ipc.hpp"

namespace {

ks_event v4_event(const char* ip, std::uint16_t port) {
  ks_event e{};
  e.addr[10] = 0xff;
  e.addr[11] = 0xff;
  ::inet_pton(AF_INET, ip, e.addr + 12);
  e.port = port;
  e.family = 4;
  return e;
}

TEST(Events, DestinationText) {
  EXPECT_EQ(ks::event_destination(v4_event("203.0.113.10", 443)), "203.0.113.10:443");
  EXPECT_EQ(ks::event_destination(v4_event("203.0.113.10", 0)), "203.0.113.10");
  ks_event v6{};
  ::inet_pton(AF_INET6, "2001:db8::1", v6.addr);
  v6.port = 53;
  v6.family = 6;
  EXPECT_EQ(ks::event_destination(v6), "[2001:db8::1]:53");
  ks_event unix_socket{};
  unix_socket.hook = KS_EV_CONNECT_UNIX;
  EXPECT_EQ(ks::event_destination(unix_socket), "");
}

TEST(Events, Names) {
  EXPECT_STREQ(ks::reason_name(KS_REASON_BLOCK_NO_TUNNEL), "no_tunnel");
  EXPECT_STREQ(ks::reason_name(KS_REASON_BLOCK_NOT_TUNNEL), "not_tunnel");
  EXPECT_STREQ(ks::reason_name(KS_REASON_BLOCK_LOCAL_RESOLVER), "local_resolver");
  EXPECT_STREQ(ks::reason_name(200), "unknown");
  EXPECT_STREQ(ks::hook_name(KS_EV_SENDMSG6), "sendmsg6");
  EXPECT_STREQ(ks::hook_name(KS_EV_EGRESS), "egress");
  EXPECT_EQ(ks::protocol_name(IPPROTO_TCP), "tcp");
  EXPECT_EQ(ks::protocol_name(IPPROTO_ICMPV6), "icmpv6");
  EXPECT_EQ(ks::protocol_name(132), "132");
}

TEST(Events, Json) {
  ks_event e = v4_event("198.51.100.7", 7000);
  e.hook = KS_EV_CONNECT4;
  e.reason = KS_REASON_BLOCK_NO_TUNNEL;
  e.protocol = IPPROTO_TCP;
  e.pid = 4242;
  std::memcpy(e.comm, "qbittorrent", 11);
  nlohmann::json j =
      nlohmann::json::parse(ks::event_text(e, 7, 1795670537123456, {"/app", "default", "qbt"}));
  EXPECT_EQ(j["seq"], 7);
  EXPECT_EQ(j["time"], "2026-11-26T05:22:17.123456Z");
  EXPECT_EQ(j["hook"], "connect4");
  EXPECT_EQ(j["reason"], "no_tunnel");
  EXPECT_EQ(j["protocol"], "tcp");
  EXPECT_EQ(j["destination"], "198.51.100.7:7000");
  EXPECT_EQ(j["address"], "198.51.100.7");
  EXPECT_EQ(j["comm"], "qbittorrent");
  EXPECT_EQ(j["pid"], 4242);
  EXPECT_EQ(j["app"], "/app");
  EXPECT_EQ(j["profile"], "default");
  EXPECT_EQ(j["command"], "qbt");
}

TEST(Events, FullCommNameIsNotOverrun) {
  ks_event e{};
  std::memset(e.comm, 'x', sizeof(e.comm));  // the kernel does not NUL-terminate a full name
  EXPECT_EQ(nlohmann::json::parse(ks::event_text(e, 1, 0, {}))["comm"].get<std::string>().size(),
            sizeof(e.comm));
}

TEST(Events, RequestFields) {
  std::string error;
  auto r = ks::ipc::parse_request(R"({"op":"events","since":5,"limit":10,"follow":true})", error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(r->op, ks::ipc::Op::kEvents);
  EXPECT_EQ(r->since, 5u);
  EXPECT_EQ(r->limit, 10u);
  EXPECT_TRUE(r->follow);
  EXPECT_FALSE(ks::ipc::parse_request(R"({"op":"events","since":-1})", error));
  EXPECT_FALSE(ks::ipc::parse_request(R"({"op":"events","limit":0})", error));
  EXPECT_FALSE(ks::ipc::parse_request(R"({"op":"events","limit":999999})", error));
  EXPECT_FALSE(ks::ipc::parse_request(R"({"op":"events","follow":"yes"})", error));
  EXPECT_FALSE(ks::ipc::op_changes_state(ks::ipc::Op::kEvents));
}

}  // namespace
