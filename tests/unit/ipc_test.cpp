// The admin protocol's pure parts: request validation, who may change state, and where
// the socket lives.
#include "killswitch/ipc.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"

namespace ks::ipc {
namespace {

// parse_request that must succeed.
Request accepted(const std::string& bytes) {
  std::string error;
  std::optional<Request> r = parse_request(bytes, error);
  EXPECT_TRUE(r.has_value()) << "refused: " << bytes.substr(0, 200) << "\nerror: " << error;
  return r.value_or(Request{});
}

// parse_request that must fail; returns the error.
std::string refused(const std::string& bytes) {
  std::string error;
  std::optional<Request> r = parse_request(bytes, error);
  EXPECT_FALSE(r.has_value()) << "accepted: " << bytes.substr(0, 200);
  EXPECT_FALSE(error.empty()) << "no error for: " << bytes.substr(0, 200);
  return error;
}

// ---------------------------------------------------------------------------------------
// parse_request: valid requests

TEST(IpcParse, SimpleOps) {
  EXPECT_EQ(accepted(R"({"op":"status"})").op, Op::kStatus);
  EXPECT_EQ(accepted(R"({"op":"list"})").op, Op::kList);
  EXPECT_EQ(accepted(R"({"op":"reload"})").op, Op::kReload);
}

TEST(IpcParse, SimpleOpsCarryNoLaunchFields) {
  const Request r = accepted(R"({"op":"status"})");
  EXPECT_TRUE(r.profile.empty());
  EXPECT_TRUE(r.argv.empty());
}

TEST(IpcParse, WhitespaceAndExtraFieldsAreFine) {
  EXPECT_EQ(accepted(" \n\t{ \"op\" : \"list\" , \"verbose\": true }\n").op, Op::kList);
}

TEST(IpcParse, LaunchFull) {
  const Request r = accepted(
      R"({"op":"launch","profile":"torrent_2","argv":["qbittorrent","--profile=x y",""]})");
  EXPECT_EQ(r.op, Op::kLaunch);
  EXPECT_EQ(r.profile, "torrent_2");
  EXPECT_EQ(r.argv, (std::vector<std::string>{"qbittorrent", "--profile=x y", ""}));
}

TEST(IpcParse, LaunchDefaultsProfileToDefault) {
  const Request r = accepted(R"({"op":"launch","argv":["firefox"]})");
  EXPECT_EQ(r.op, Op::kLaunch);
  EXPECT_EQ(r.profile, "default");
  EXPECT_EQ(r.argv, std::vector<std::string>{"firefox"});
}

// ksrun's single-instance check: the executable to look for and ksrun's own pid.
TEST(IpcParse, LaunchAsksForRunningCopies) {
  Request r = accepted(
      R"({"op":"launch","argv":["firefox"],"executable":"/usr/lib/firefox/firefox","pid":4242})");
  EXPECT_EQ(r.executable, "/usr/lib/firefox/firefox");
  EXPECT_EQ(r.pid, 4242);
  r = accepted(R"({"op":"launch","argv":["firefox"]})");
  EXPECT_TRUE(r.executable.empty());
  EXPECT_EQ(r.pid, 0);
  EXPECT_EQ(refused(R"({"op":"launch","executable":"firefox","pid":1})"),
            "\"executable\" must be an absolute path");
  EXPECT_EQ(refused(R"({"op":"launch","executable":"","pid":1})"),
            "\"executable\" must be an absolute path");
  EXPECT_EQ(refused(R"({"op":"launch","executable":7})"),
            "\"executable\" must be an absolute path");
  EXPECT_EQ(refused(R"({"op":"launch","executable":"/)" + std::string(5000, 'a') + R"("})"),
            "\"executable\" must be an absolute path");
  EXPECT_EQ(refused(R"({"op":"launch","pid":-3})"), "\"pid\" must be a positive process id");
  EXPECT_EQ(refused(R"({"op":"launch","pid":"12"})"), "\"pid\" must be a positive process id");
  // Only a launch looks: a status request's fields stay empty.
  EXPECT_TRUE(accepted(R"({"op":"status","executable":"/bin/x"})").executable.empty());
}

TEST(IpcParse, LaunchWithoutArgvOrWithEmptyArgv) {
  Request r = accepted(R"({"op":"launch"})");
  EXPECT_EQ(r.op, Op::kLaunch);
  EXPECT_EQ(r.profile, "default");
  EXPECT_TRUE(r.argv.empty());
  r = accepted(R"({"op":"launch","profile":"default","argv":[]})");
  EXPECT_TRUE(r.argv.empty());
}

TEST(IpcParse, LaunchProfileNameLimits) {
  EXPECT_EQ(accepted(R"({"op":"launch","profile":"a"})").profile, "a");
  const std::string longest(31, 'x');
  EXPECT_EQ(accepted(R"({"op":"launch","profile":")" + longest + R"("})").profile, longest);
}

TEST(IpcParse, LaunchArgvKeepsUnicodeAndEscapes) {
  const Request r = accepted(R"({"op":"launch","argv":["caf\u00e9","a\"b","tab\there"]})");
  EXPECT_EQ(r.argv, (std::vector<std::string>{"caf\xc3\xa9", "a\"b", "tab\there"}));
}

TEST(IpcParse, MessageOfExactlyTheLimitIsAccepted) {
  std::string msg = R"({"op":"status","pad":""})";
  msg.insert(msg.size() - 2, kMaxMessageBytes - msg.size(), 'x');
  ASSERT_EQ(msg.size(), kMaxMessageBytes);
  EXPECT_EQ(accepted(msg).op, Op::kStatus);
}

TEST(IpcParse, ManyArgvEntriesUpToTheLimit) {
  std::string msg = R"({"op":"launch","argv":[)";
  for (int i = 0; i < 4096; ++i) msg += (i ? ",\"a\"" : "\"a\"");
  msg += "]}";
  EXPECT_EQ(accepted(msg).argv.size(), 4096u);
}

// ---------------------------------------------------------------------------------------
// parse_request: everything else is refused with a message and no request

TEST(IpcParse, GarbageIsRefused) {
  struct {
    const char* description;
    std::string bytes;
  } const cases[] = {
      {"empty string", ""},
      {"only whitespace", " \n "},
      {"not JSON", "status"},
      {"truncated object", R"({"op":"status")"},
      {"trailing garbage", R"({"op":"status"} x)"},
      {"two objects", R"({"op":"status"}{"op":"reload"})"},
      {"single quotes", "{'op':'status'}"},
      {"JSON array", R"([{"op":"status"}])"},
      {"JSON number", "42"},
      {"JSON string", R"("status")"},
      {"JSON null", "null"},
      {"JSON true", "true"},
      {"invalid UTF-8 in a string", "{\"op\":\"launch\",\"argv\":[\"\xff\xfe\"]}"},
      {"missing op", R"({"profile":"default"})"},
      {"empty object", "{}"},
      {"op null", R"({"op":null})"},
      {"op number", R"({"op":1})"},
      {"op array", R"({"op":["status"]})"},
      {"op object", R"({"op":{"name":"status"}})"},
      {"op bool", R"({"op":true})"},
      {"unknown op", R"({"op":"teardown_everything"})"},
      {"empty op", R"({"op":""})"},
      {"op with different case", R"({"op":"STATUS"})"},
      {"op with trailing space", R"({"op":"status "})"},
      {"op with a NUL inside", R"({"op":"status\u0000"})"},
      {"launch profile number", R"({"op":"launch","profile":1})"},
      {"launch profile null", R"({"op":"launch","profile":null})"},
      {"launch profile array", R"({"op":"launch","profile":["default"]})"},
      {"launch profile empty", R"({"op":"launch","profile":""})"},
      {"launch profile with dash", R"({"op":"launch","profile":"a-b"})"},
      {"launch profile path", R"({"op":"launch","profile":"../etc"})"},
      {"launch profile with space", R"({"op":"launch","profile":"de fault"})"},
      {"launch profile too long", R"({"op":"launch","profile":")" + std::string(32, 'x') + "\"}"},
      {"launch argv string", R"({"op":"launch","argv":"qbittorrent"})"},
      {"launch argv object", R"({"op":"launch","argv":{"0":"qbittorrent"}})"},
      {"launch argv null", R"({"op":"launch","argv":null})"},
      {"launch argv with number", R"({"op":"launch","argv":["qbittorrent",1]})"},
      {"launch argv with null", R"({"op":"launch","argv":[null]})"},
      {"launch argv with nested array", R"({"op":"launch","argv":[["qbittorrent"]]})"},
      {"launch argv with object", R"({"op":"launch","argv":[{}]})"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    refused(c.bytes);
  }
}

TEST(IpcParse, NulByteDoesNotEndTheMessage) {
  // nlohmann::json's lexer treats '\0' as end of input, so {"op":"status"}\0{"op":"reload"}
  // would parse as status; one message is one JSON object, so any NUL is refused.
  refused(std::string(R"({"op":"status"})") + '\0');
  refused(std::string(R"({"op":"status"})") + '\0' + R"({"op":"reload"})");
  refused(std::string(R"({"op":"status"})") + '\0' + "garbage");
}

TEST(IpcParse, Protect) {
  std::string error;
  auto r = parse_request(R"({"op":"protect","pid":4242,"profile":"work"})", error);
  ASSERT_TRUE(r.has_value()) << error;
  EXPECT_EQ(r->op, Op::kProtect);
  EXPECT_EQ(r->pid, 4242);
  EXPECT_EQ(r->profile, "work");
  r = parse_request(R"({"op":"protect","pid":7})", error);
  ASSERT_TRUE(r.has_value()) << error;
  EXPECT_EQ(r->profile, "default");
  for (const char* bad : {R"({"op":"protect"})", R"({"op":"protect","pid":0})",
                          R"({"op":"protect","pid":-3})", R"({"op":"protect","pid":"12"})",
                          R"({"op":"protect","pid":1.5})", R"({"op":"protect","pid":99999999999})"})
    EXPECT_NE(refused(bad).find("pid"), std::string::npos) << bad;
}

TEST(IpcParse, ErrorMessagesSayWhatIsWrong) {
  EXPECT_NE(refused("[]").find("JSON object"), std::string::npos);
  EXPECT_NE(refused("{}").find("\"op\""), std::string::npos);
  EXPECT_NE(refused(R"({"op":"frobnicate"})").find("frobnicate"), std::string::npos);
  EXPECT_NE(refused(R"({"op":"launch","profile":"a-b"})").find("profile"), std::string::npos);
  EXPECT_NE(refused(R"({"op":"launch","argv":[1]})").find("argv"), std::string::npos);
}

TEST(IpcParse, UnknownOpErrorIsBounded) {
  const std::string name(100000, 'z');
  const std::string error = refused(R"({"op":")" + name + "\"}");
  EXPECT_LT(error.size(), 200u) << "the reply must not echo an arbitrarily long op";
}

TEST(IpcParse, HugeMessageIsRefused) {
  std::string msg = R"({"op":"status","pad":""})";
  msg.insert(msg.size() - 2, kMaxMessageBytes + 1 - msg.size(), 'x');
  ASSERT_EQ(msg.size(), kMaxMessageBytes + 1);
  EXPECT_NE(refused(msg).find("too large"), std::string::npos);
  // Far beyond the limit, and garbage: still just refused.
  refused(std::string(4 * kMaxMessageBytes, '{'));
}

TEST(IpcParse, TooManyArgvEntriesAreRefused) {
  std::string msg = R"({"op":"launch","argv":[)";
  for (int i = 0; i < 4097; ++i) msg += (i ? ",\"a\"" : "\"a\"");
  msg += "]}";
  ASSERT_LE(msg.size(), kMaxMessageBytes);
  refused(msg);
}

TEST(IpcParse, DeeplyNestedJsonIsRefusedWithoutCrashing) {
  // As deep as fits in one message: the parser must neither overflow the stack parsing
  // nor destroying it (an unprivileged client could otherwise kill ksd).
  const std::size_t depth = (kMaxMessageBytes - 64) / 2;
  refused(std::string(depth, '[') + std::string(depth, ']'));
  const std::string nested = std::string(depth - 20, '[') + std::string(depth - 20, ']');
  const Request r = accepted(R"({"op":"status","x":)" + nested + "}");
  EXPECT_EQ(r.op, Op::kStatus);
  refused(R"({"op":"launch","argv":)" + nested + "}");
}

// ---------------------------------------------------------------------------------------
// Authorization

PeerCred peer(uid_t uid, gid_t gid, std::vector<gid_t> groups = {}) {
  PeerCred p;
  p.pid = 1234;
  p.uid = uid;
  p.gid = gid;
  p.groups = std::move(groups);
  return p;
}

constexpr gid_t kAdmin = 977;

TEST(IpcAuth, RootMayAlwaysChange) {
  EXPECT_TRUE(may_change(peer(0, 0), kAdmin));
  EXPECT_TRUE(may_change(peer(0, 0), std::nullopt));
  EXPECT_TRUE(may_change(peer(0, 1000, {1000}), std::nullopt));
}

TEST(IpcAuth, AdminGroupAsPrimaryOrSupplementary) {
  EXPECT_TRUE(may_change(peer(1000, kAdmin), kAdmin));
  EXPECT_TRUE(may_change(peer(1000, 1000, {kAdmin}), kAdmin));
  EXPECT_TRUE(may_change(peer(1000, 1000, {4, 24, 27, kAdmin, 1000}), kAdmin));
}

TEST(IpcAuth, OtherUsersMayNot) {
  EXPECT_FALSE(may_change(peer(1000, 1000), kAdmin));
  EXPECT_FALSE(may_change(peer(1000, 1000, {4, 24, 27, 1000}), kAdmin));
  EXPECT_FALSE(may_change(peer(1000, 1000, {kAdmin + 1, kAdmin - 1}), kAdmin));
  // Root's group is not root: gid 0 without uid 0 is just another user.
  EXPECT_FALSE(may_change(peer(1000, 0, {0}), kAdmin));
  EXPECT_FALSE(may_change(peer(65534, 65534), kAdmin));
}

TEST(IpcAuth, NoAdminGroupConfiguredMeansOnlyRoot) {
  EXPECT_FALSE(may_change(peer(1000, 1000), std::nullopt));
  EXPECT_FALSE(may_change(peer(1000, kAdmin, {kAdmin}), std::nullopt));
  EXPECT_FALSE(may_change(peer(1000, 0, {0}), std::nullopt));
  EXPECT_TRUE(may_change(peer(0, 0), std::nullopt));
}

TEST(IpcAuth, OpChangesState) {
  EXPECT_TRUE(op_changes_state(Op::kReload));
  EXPECT_FALSE(op_changes_state(Op::kStatus));
  EXPECT_FALSE(op_changes_state(Op::kList));
  EXPECT_FALSE(op_changes_state(Op::kLaunch));  // any user may launch into a profile
  EXPECT_TRUE(op_changes_state(Op::kProtect));  // adopting another process is an admin act
}

// ---------------------------------------------------------------------------------------
// Socket path

// Sets or clears KILLSWITCH_SOCKET for one test and puts the old value back.
class SocketEnv {
 public:
  SocketEnv() {
    if (const char* old = std::getenv(kSocketEnv)) old_ = old;
  }
  ~SocketEnv() {
    if (old_)
      ::setenv(kSocketEnv, old_->c_str(), 1);
    else
      ::unsetenv(kSocketEnv);
  }
  SocketEnv(const SocketEnv&) = delete;
  SocketEnv& operator=(const SocketEnv&) = delete;

  void set(const char* value) { ASSERT_EQ(::setenv(kSocketEnv, value, 1), 0); }
  void unset() { ASSERT_EQ(::unsetenv(kSocketEnv), 0); }

 private:
  std::optional<std::string> old_;
};

TEST(IpcSocketPath, DefaultWhenUnset) {
  SocketEnv env;
  env.unset();
  EXPECT_EQ(default_socket_path(), "/run/killswitch/ksd.sock");
  EXPECT_EQ(default_socket_path(), kDefaultSocketPath);
}

TEST(IpcSocketPath, EnvironmentOverrides) {
  SocketEnv env;
  env.set("/tmp/ks-test/ksd.sock");
  EXPECT_EQ(default_socket_path(), "/tmp/ks-test/ksd.sock");
  env.set("relative.sock");
  EXPECT_EQ(default_socket_path(), "relative.sock");
}

TEST(IpcSocketPath, EmptyValueIsIgnored) {
  SocketEnv env;
  env.set("");
  EXPECT_EQ(default_socket_path(), kDefaultSocketPath);
}

TEST(IpcSocketPath, EnvironmentIsRestored) {
  const char* before = std::getenv(kSocketEnv);
  const std::optional<std::string> saved =
      before ? std::optional<std::string>(before) : std::nullopt;
  {
    SocketEnv env;
    env.set("/tmp/elsewhere.sock");
  }
  const char* after = std::getenv(kSocketEnv);
  EXPECT_EQ(after ? std::optional<std::string>(after) : std::nullopt, saved);
}

}  // namespace
}  // namespace ks::ipc

// A reply bigger than one SOCK_SEQPACKET message can carry (ksctl list with thousands of
// apps) arrives whole, in fragments.
TEST(IpcMessages, LargeMessageArrivesWhole) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  ks::UniqueFd a(sv[0]), b(sv[1]);
  nlohmann::json big = {{"ok", true}, {"apps", nlohmann::json::array()}};
  for (int i = 0; i < 20000; ++i)
    big["apps"].push_back({{"cgroup", "/killswitch.slice/app-" + std::to_string(i)},
                           {"command", std::string(40, 'x')}});
  ASSERT_GT(big.dump().size(), 1000000u);
  std::thread sender([&] { ks::ipc::send_message(a.get(), big); });
  nlohmann::json got = ks::ipc::receive_message(b.get(), 5000);
  sender.join();
  EXPECT_EQ(got, big);
  // A small one is still one plain message.
  ks::ipc::send_message(a.get(), {{"ok", true}});
  EXPECT_EQ(ks::ipc::receive_message(b.get(), 1000), (nlohmann::json{{"ok", true}}));
}

// Text written without a JSON tree (ksd's list) travels the same way and arrives as it was
// sent; receive_text hands it over unparsed.
TEST(IpcMessages, LargeTextArrivesAsSent) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  ks::UniqueFd a(sv[0]), b(sv[1]);
  std::string text = R"({"ok":true,"apps":[)";
  for (int i = 0; i < 20000; ++i) text += (i ? ",\"" : "\"") + std::string(60, 'y') + "\"";
  text += "]}";
  std::thread sender([&] { ks::ipc::send_text(a.get(), text); });
  const std::string got = ks::ipc::receive_text(b.get(), 5000);
  sender.join();
  EXPECT_EQ(got, text);
}

// Strings from the system need not be UTF-8 (command lines, task names): a message with
// such bytes is still sent, with U+FFFD in their place, instead of an exception (which
// once ended ksd when `ksctl events` met such a task name).
TEST(IpcMessages, BytesThatAreNotUtf8BecomeReplacementCharacters) {
  const nlohmann::json message = {{"command", std::string("bad\xff\xfename")}};
  EXPECT_EQ(ks::ipc::message_text(message), "{\"command\":\"bad\xef\xbf\xbd\xef\xbf\xbdname\"}");
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  ks::UniqueFd a(sv[0]), b(sv[1]);
  ASSERT_NO_THROW(ks::ipc::send_message(a.get(), message));
  EXPECT_EQ(ks::ipc::receive_message(b.get(), 1000)["command"], "bad\uFFFD\uFFFDname");
}

// Fragment headers that do not add up are refused, never waited on or over-read.
TEST(IpcMessages, BadFragmentHeadersAreRefused) {
  auto receive_after = [](const std::vector<std::string>& messages) -> std::string {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return "socketpair";
    ks::UniqueFd a(sv[0]), b(sv[1]);
    for (const auto& m : messages) ::send(a.get(), m.data(), m.size(), 0);
    try {
      ks::ipc::receive_message(b.get(), 200);
    } catch (const ks::Error& e) {
      return e.what();
    }
    return "accepted";
  };
  const std::string chunk(64 * 1024, ' ');
  EXPECT_NE(receive_after({R"({"fragments":2,"bytes":10})"}).find("bad fragment header"),
            std::string::npos);
  EXPECT_NE(receive_after({R"({"fragments":"x","bytes":10})"}).find("bad fragment header"),
            std::string::npos);
  EXPECT_NE(receive_after({R"({"fragments":1,"bytes":999999999999})"}).find("bad fragment header"),
            std::string::npos);
  EXPECT_NE(receive_after({R"({"fragments":2,"bytes":70000})", chunk, chunk}).find("more bytes"),
            std::string::npos);
  EXPECT_NE(receive_after({R"({"fragments":2,"bytes":70000})", chunk}).find("no answer"),
            std::string::npos)
      << "a missing fragment ends in the timeout";
  EXPECT_NE(receive_after({R"({"fragments":2,"bytes":131072})", chunk, chunk}).find("not a JSON"),
            std::string::npos);
}

// A streamed reply (ksd's list): parts as they come, checked for its length at the end;
// streams that do not add up, or that end in an error, are refused.
TEST(IpcMessages, StreamedReplies) {
  auto receive_after = [](const std::vector<std::string>& messages) -> std::string {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return "socketpair";
    ks::UniqueFd a(sv[0]), b(sv[1]);
    ::send(a.get(), ks::ipc::kStreamHeader.data(), ks::ipc::kStreamHeader.size(), 0);
    for (const auto& m : messages) ::send(a.get(), m.data(), m.size(), 0);
    try {
      ks::ipc::ReplyReader reader(b.get(), 200);
      std::string text;
      for (std::string_view part; reader.next(part);) text += "[" + std::string(part) + "]";
      return text;
    } catch (const ks::Error& e) {
      return std::string("error: ") + e.what();
    }
  };
  EXPECT_EQ(receive_after({"d{\"ok\":", "dtrue}", "e11"}), "[{\"ok\":][true}]");
  EXPECT_EQ(receive_after({"e0"}), "");
  EXPECT_EQ(receive_after({"dabc", "e4"}),
            "error: malformed answer (stream of 4 bytes, received 3)");
  EXPECT_EQ(receive_after({"dabc", "xksd is stopping"}), "error: ksd is stopping");
  EXPECT_EQ(receive_after({"dabc", "?"}), "error: malformed answer (bad stream message)");
  EXPECT_NE(receive_after({"dabc"}).find("no answer"), std::string::npos)
      << "a stream that stops ends in the timeout";
}

// A peer that stops reading cannot hold the sender forever.
TEST(IpcMessages, SendToAPeerThatDoesNotReadTimesOut) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  ks::UniqueFd a(sv[0]), b(sv[1]);
  // The text is made first: only the sending is timed (writing 8 MB of JSON takes seconds
  // in a sanitizer build on a busy machine; the send's own bound is 5 s).
  const std::string big =
      ks::ipc::message_text(nlohmann::json{{"blob", std::string(8 * 1024 * 1024, 'y')}});
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(ks::ipc::send_text(a.get(), big), ks::Error);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(8));
}
