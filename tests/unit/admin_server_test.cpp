// ksd's admin server over socketpairs, without a daemon: requests and replies, deferred
// replies, permissions, garbage, event streams, and the one close path (a client that
// ends for any reason leaves nothing behind for the next one that gets its fd number).
#include "admin_server.hpp"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace ks {
namespace {

class RecordingWatcher : public FdWatcher {
 public:
  void watch(int fd) override { watched.insert(fd); }
  void unwatch(int fd) override { watched.erase(fd); }
  std::set<int> watched;
};

class AdminServerTest : public ::testing::Test {
 protected:
  AdminServerTest()
      : server_(watcher_, std::nullopt,
                [this](AdminServer::ClientId client, const ipc::Request& request,
                       const ipc::PeerCred&) -> std::optional<std::string> {
                  handled_.push_back(request.op);
                  if (request.op == ipc::Op::kEvents && request.follow) server_.follow(client);
                  if (defer_) {
                    deferred_ = client;
                    return std::nullopt;
                  }
                  return ipc::message_text({{"ok", true}, {"op", static_cast<int>(request.op)}});
                }) {}

  // A connected pair; the server gets one end, at fd number `at` if given (as accept()
  // would give the lowest free one). Returns {client end, server fd number}.
  std::pair<UniqueFd, int> Connect(AdminServer::ClientId* id = nullptr, int at = -1) {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds), 0);
    int client = fds[0], server = fds[1];
    if (at >= 0) {
      client = ::fcntl(fds[0], F_DUPFD_CLOEXEC, 100);
      ::close(fds[0]);
      if (server != at) {
        EXPECT_EQ(::dup3(fds[1], at, O_CLOEXEC), at);
        ::close(fds[1]);
        server = at;
      }
    }
    AdminServer::ClientId got = server_.adopt(UniqueFd(server));
    if (id) *id = got;
    return {UniqueFd(client), server};
  }

  // The client follows the events (its reply read).
  void Follow(const UniqueFd& client, int fd) {
    Send(client, R"({"op":"events","follow":true})");
    server_.on_ready(fd);
    ASSERT_TRUE(Receive(client));
  }

  static void Send(const UniqueFd& client, const std::string& text) {
    ASSERT_EQ(::send(client.get(), text.data(), text.size(), 0), static_cast<ssize_t>(text.size()));
  }

  // The next message waiting for the client, or nullopt when there is none.
  static std::optional<nlohmann::json> Receive(const UniqueFd& client) {
    std::string buf(1 << 16, '\0');
    ssize_t n = ::recv(client.get(), buf.data(), buf.size(), MSG_DONTWAIT);
    if (n <= 0) return std::nullopt;
    buf.resize(static_cast<std::size_t>(n));
    return nlohmann::json::parse(buf);
  }

  RecordingWatcher watcher_;
  AdminServer server_;
  std::vector<ipc::Op> handled_;
  bool defer_ = false;
  AdminServer::ClientId deferred_ = 0;
};

TEST_F(AdminServerTest, AnswersARequest) {
  auto [client, fd] = Connect();
  EXPECT_TRUE(watcher_.watched.count(fd));
  Send(client, R"({"op":"status"})");
  ASSERT_TRUE(server_.on_ready(fd));
  auto reply = Receive(client);
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["ok"], true);
  EXPECT_EQ(handled_.size(), 1u);
}

TEST_F(AdminServerTest, GarbageGetsAnErrorAndNoHandlerCall) {
  auto [client, fd] = Connect();
  // The empty one last: it ends the connection.
  for (const char* garbage : {"{", "[1,2]", "\xff\xfe", R"({"op":"format-disk"})", ""}) {
    Send(client, garbage);
    server_.on_ready(fd);
    auto reply = Receive(client);
    if (std::string(garbage).empty()) {
      // An empty datagram reads as 0 bytes: the connection's end for SEQPACKET.
      EXPECT_FALSE(reply);
      break;
    }
    ASSERT_TRUE(reply) << garbage;
    EXPECT_EQ((*reply)["ok"], false) << garbage;
  }
  EXPECT_TRUE(handled_.empty());
}

// A socketpair's SO_PEERCRED are its creator's: so that CI (root) sees the refusal too, a
// child becomes nobody first and runs server and client itself; its exit status says what
// it saw (0: refused with "permission denied", the handler never called).
TEST(AdminServerPermissions, ChangesNeedTheAdminGroupOrRoot) {
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::geteuid() == 0 &&
        (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0))
      ::_exit(2);
    RecordingWatcher watcher;
    bool handled = false;
    AdminServer server(watcher, std::nullopt,
                       [&](AdminServer::ClientId, const ipc::Request&, const ipc::PeerCred&) {
                         handled = true;
                         return std::optional<std::string>(ipc::message_text({{"ok", true}}));
                       });
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) != 0)
      ::_exit(3);
    server.adopt(UniqueFd(fds[1]));
    const std::string request = R"({"op":"reload"})";
    if (::send(fds[0], request.data(), request.size(), 0) < 0) ::_exit(4);
    server.on_ready(fds[1]);
    std::string reply(4096, '\0');
    ssize_t n = ::recv(fds[0], reply.data(), reply.size(), MSG_DONTWAIT);
    if (n <= 0) ::_exit(5);
    reply.resize(static_cast<std::size_t>(n));
    ::_exit(!handled && reply.find("permission denied") != std::string::npos ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "1: reload by nobody was not refused; 2-5: the child could not set up";
}

TEST_F(AdminServerTest, HangUpForgetsTheClient) {
  auto [client, fd] = Connect();
  client.reset();
  server_.on_ready(fd);
  EXPECT_EQ(server_.client_count(), 0u);
  EXPECT_FALSE(watcher_.watched.count(fd));
}

TEST_F(AdminServerTest, DeferredReplyOneRequestAtATime) {
  defer_ = true;
  auto [client, fd] = Connect();
  Send(client, R"({"op":"launch","profile":"default","argv":["true"]})");
  server_.on_ready(fd);
  EXPECT_FALSE(Receive(client)) << "answered later";
  Send(client, R"({"op":"status"})");  // overtaking is refused
  server_.on_ready(fd);
  auto busy = Receive(client);
  ASSERT_TRUE(busy);
  EXPECT_EQ((*busy)["ok"], false);
  server_.reply_later(deferred_, {{"ok", true}, {"late", true}});
  auto late = Receive(client);
  ASSERT_TRUE(late);
  EXPECT_EQ((*late)["late"], true);
  server_.reply_later(deferred_, {{"ok", true}});  // twice: dropped
  EXPECT_FALSE(Receive(client));
}

TEST_F(AdminServerTest, DeferredReplyForAGoneClientReachesNoOneElse) {
  defer_ = true;
  AdminServer::ClientId first = 0;
  auto [client, fd] = Connect(&first);
  Send(client, R"({"op":"launch","profile":"default","argv":["true"]})");
  server_.on_ready(fd);
  client.reset();
  server_.on_ready(fd);                         // hung up
  auto [next, next_fd] = Connect(nullptr, fd);  // the fd number is free again
  server_.reply_later(first, {{"ok", true}, {"for", "the first client"}});
  EXPECT_FALSE(Receive(next));
}

TEST_F(AdminServerTest, FollowersGetEventsUntilTheyGo) {
  auto [client, fd] = Connect();
  Follow(client, fd);
  server_.push_event(R"({"seq":1})");
  auto e = Receive(client);
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)["event"]["seq"], 1);
}

// Regression (issue 14): a follower whose reply to a later request could not be delivered
// was closed, but its fd number stayed in the followers, so the next client to get that
// number received the first one's event stream.
TEST_F(AdminServerTest, AFailedReplyEndsTheStreamToo) {
  AdminServer::ClientId follower = 0;
  auto [client, fd] = Connect(&follower);
  Follow(client, fd);
  ASSERT_TRUE(server_.is_following(follower));
  // The connection breaks for sending (as when the peer's buffer is gone): the reply to
  // the next request fails.
  ASSERT_EQ(::shutdown(fd, SHUT_WR), 0);
  Send(client, R"({"op":"status"})");
  server_.on_ready(fd);
  EXPECT_EQ(server_.client_count(), 0u);
  EXPECT_FALSE(server_.is_following(follower));

  auto [stranger, stranger_fd] = Connect(nullptr, fd);  // the fd number is free again
  ASSERT_EQ(stranger_fd, fd);
  server_.push_event(R"({"seq":2,"secret":"the first client's"})");
  EXPECT_FALSE(Receive(stranger)) << "a new client got another client's events";
}

TEST_F(AdminServerTest, AFollowerThatCannotKeepUpIsClosed) {
  AdminServer::ClientId follower = 0;
  auto [client, fd] = Connect(&follower);
  Follow(client, fd);
  // Never read: the socket's buffer fills, the push fails, the stream ends.
  for (int i = 0; i < 100000 && server_.client_count() > 0; ++i)
    server_.push_event(R"({"seq":)" + std::to_string(i) + R"(,"padding":")" +
                       std::string(512, 'x') + "\"}");
  EXPECT_EQ(server_.client_count(), 0u);
  EXPECT_FALSE(watcher_.watched.count(fd));
}

}  // namespace
}  // namespace ks
