// ksd's admin server over socketpairs, without a daemon: requests and replies, deferred
// replies, permissions, garbage, event streams, and the one close path (a client that
// ends for any reason leaves nothing behind for the next one that gets its fd number).
#include "admin_server.hpp"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "killswitch/error.hpp"

namespace ks {
namespace {

class RecordingWatcher : public FdWatcher {
 public:
  void watch(int fd) override { watched.insert(fd); }
  void unwatch(int fd) override {
    watched.erase(fd);
    output.erase(fd);
  }
  void watch_output(int fd, bool on) override {
    if (on)
      output.insert(fd);
    else
      output.erase(fd);
  }
  std::set<int> watched;
  std::set<int> output;  // watched for room to write instead of input
};

// The list as a stream: {"ok":true,"apps":[0,1,...]} a few numbers per part, after three
// calls that append nothing (work of its own, done in steps); it fails at `fail_at` when set.
class CountingSource : public TextSource {
 public:
  CountingSource(int count, int fail_at = -1) : count_(count), fail_at_(fail_at) {}
  bool next(std::string& out) override {
    if (steps_ > 0) {
      --steps_;
      return true;
    }
    if (at_ == -1) {
      out += R"({"ok":true,"apps":[)";
      at_ = 0;
      return true;
    }
    if (at_ > count_) return false;
    for (int i = 0; i < 50 && at_ < count_; ++i, ++at_) {
      if (at_ == fail_at_) throw Error("the source failed");
      out += (at_ ? "," : "") + std::to_string(at_);
    }
    if (at_ == count_) {
      out += "]}";
      ++at_;
    }
    return true;
  }

 private:
  int count_, fail_at_, at_ = -1, steps_ = 3;
};

// A source whose first part waits for work elsewhere (ksd's list reader thread): it says
// so with an eventfd, written when the test lets it go on; counts how often it was asked.
class WaitingSource : public TextSource {
 public:
  explicit WaitingSource(int* asked) : asked_(asked), fd_(::eventfd(0, EFD_CLOEXEC)) {}
  bool next(std::string& out) override {
    ++*asked_;
    if (!ready()) return true;
    if (sent_) return false;
    out += R"({"ok":true,"apps":[]})";
    sent_ = true;
    return true;
  }
  int waiting_on() const override { return ready() ? -1 : fd_.get(); }
  int fd() const { return fd_.get(); }

 private:
  bool ready() const {
    pollfd p{fd_.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  }
  int* asked_;
  UniqueFd fd_;
  bool sent_ = false;
};

class AdminServerTest : public ::testing::Test {
 protected:
  AdminServerTest()
      : server_(watcher_, std::nullopt,
                [this](AdminServer::ClientId client, const ipc::Request& request,
                       const ipc::PeerCred&) -> std::optional<Reply> {
                  handled_.push_back(request.op);
                  if (request.op == ipc::Op::kList && waiting_) {
                    auto source = std::make_unique<WaitingSource>(&asked_);
                    waiting_fd_ = source->fd();
                    return Reply(std::move(source));
                  }
                  if (request.op == ipc::Op::kList)
                    return Reply(std::make_unique<CountingSource>(list_count_, list_fail_at_));
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

  // A client that asked for a list whose source waits (a WaitingSource): parked.
  std::pair<UniqueFd, int> ListParked(AdminServer::ClientId* id) {
    waiting_ = true;
    auto connected = Connect(id);
    Send(connected.first, R"({"op":"list"})");
    server_.on_ready(connected.second);
    EXPECT_TRUE(server_.is_parked(*id));
    return connected;
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
  int list_count_ = 200000;  // about 1.3 MB of text
  int list_fail_at_ = -1;
  bool waiting_ = false;  // lists come from a WaitingSource
  int asked_ = 0;         // its next() calls
  int waiting_fd_ = -1;   // its eventfd
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
                         return std::optional<Reply>(ipc::message_text({{"ok", true}}));
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

// A client that sends its request as soon as it has connected is answered in the turn that
// accepts it, not one turn later (that turn may be a turn of someone's list).
TEST_F(AdminServerTest, ARequestSentOnConnectIsAnsweredAtAccept) {
  char dir[] = "/tmp/ks-admin-test.XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/ksd.sock";
  server_.listen(path);
  UniqueFd client = ipc::connect_to(path);
  Send(client, R"({"op":"status"})");
  server_.on_ready(server_.listen_fd());
  auto reply = Receive(client);
  ::unlink(path.c_str());
  ::rmdir(dir);
  ASSERT_TRUE(reply) << "answered only at the next turn";
  EXPECT_EQ((*reply)["ok"], true);
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

// A list goes out part by part, and other clients are answered while it does: the server
// sends a few fragments per turn and then waits for room, watching the client for output.
TEST_F(AdminServerTest, AListIsStreamedWhileOthersAreServed) {
  AdminServer::ClientId lister = 0;
  auto [client, fd] = Connect(&lister);
  std::string text, error;
  std::atomic<bool> reading{false};
  Send(client, R"({"op":"list"})");
  server_.on_ready(fd);
  ASSERT_TRUE(server_.is_streaming(lister));
  EXPECT_TRUE(watcher_.output.count(fd)) << "watched for room to write";

  // Another client is answered at once while the list has not gone out yet.
  auto [other, other_fd] = Connect();
  Send(other, R"({"op":"status"})");
  server_.on_ready(other_fd);
  auto reply = Receive(other);
  ASSERT_TRUE(reply) << "status waited for the list";
  EXPECT_EQ((*reply)["ok"], true);

  std::thread reader([&, c = client.get()] {
    try {
      reading = true;
      text = ipc::receive_text(c, 5000);
    } catch (const Error& e) {
      error = e.what();
    }
  });
  for (int turns = 0; server_.is_streaming(lister) && turns < 100000; ++turns) {
    server_.on_ready(fd);
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  reader.join();
  EXPECT_EQ(error, "");
  EXPECT_FALSE(server_.is_streaming(lister));
  EXPECT_FALSE(watcher_.output.count(fd)) << "watched for input again";
  auto list = nlohmann::json::parse(text, nullptr, false);
  ASSERT_FALSE(list.is_discarded()) << text.substr(0, 200);
  ASSERT_EQ(list["apps"].size(), static_cast<std::size_t>(list_count_));
  EXPECT_EQ(list["apps"].back(), list_count_ - 1);

  // The connection takes requests again.
  Send(client, R"({"op":"status"})");
  server_.on_ready(fd);
  EXPECT_TRUE(Receive(client));
}

TEST_F(AdminServerTest, AStreamThatFailsSaysWhyAndEnds) {
  list_fail_at_ = 100000;
  auto [client, fd] = Connect();
  std::string error;
  std::thread reader([&, c = client.get()] {
    try {
      ipc::receive_text(c, 5000);
    } catch (const Error& e) {
      error = e.what();
    }
  });
  Send(client, R"({"op":"list"})");
  for (int turns = 0; server_.client_count() > 0 && turns < 100000; ++turns) {
    server_.on_ready(fd);
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  reader.join();
  EXPECT_EQ(error, "the source failed");
  EXPECT_EQ(server_.client_count(), 0u);
}

// A client that asks for a list and stops reading holds nothing for ever.
TEST_F(AdminServerTest, AStreamNotTakenExpires) {
  auto [client, fd] = Connect();
  Send(client, R"({"op":"list"})");
  server_.on_ready(fd);
  server_.on_ready(fd);  // no room: nothing more goes
  EXPECT_EQ(server_.client_count(), 1u);
  server_.expire(std::chrono::steady_clock::now());
  EXPECT_EQ(server_.client_count(), 1u) << "not yet";
  server_.expire(std::chrono::steady_clock::now() + AdminServer::kStreamTimeout +
                 std::chrono::seconds(1));
  EXPECT_EQ(server_.client_count(), 0u);
  EXPECT_FALSE(watcher_.watched.count(fd));
}

// A list whose source waits for its reader thread costs the loop nothing meanwhile: the
// client is not watched (a writable socket would wake the loop on every turn) but the
// source's fd is; once that is ready the stream goes on and ends as any other.
TEST_F(AdminServerTest, AStreamWaitingForItsSourceIsParked) {
  AdminServer::ClientId lister = 0;
  auto [client, fd] = ListParked(&lister);
  EXPECT_EQ(asked_, 1);
  EXPECT_FALSE(watcher_.watched.count(fd)) << "the client is left alone meanwhile";
  EXPECT_TRUE(watcher_.watched.count(waiting_fd_));
  EXPECT_TRUE(server_.is_stream_fd(fd));

  const std::uint64_t one = 1;
  ASSERT_EQ(::write(waiting_fd_, &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
  EXPECT_TRUE(server_.on_ready(waiting_fd_));
  EXPECT_FALSE(server_.is_parked(lister));
  EXPECT_FALSE(watcher_.watched.count(waiting_fd_));
  EXPECT_TRUE(watcher_.output.count(fd)) << "watched for room to write again";
  EXPECT_EQ(asked_, 1) << "asked again at the client's own turn, not the wait fd's";
  for (int turns = 0; server_.is_streaming(lister) && turns < 100; ++turns) server_.on_ready(fd);
  EXPECT_FALSE(server_.is_streaming(lister));
  EXPECT_EQ(ipc::receive_text(client.get(), 1000), R"({"ok":true,"apps":[]})");
}

// A client that goes while its stream is parked takes the wait with it.
TEST_F(AdminServerTest, AClientClosedWhileParkedLeavesNothingWatched) {
  AdminServer::ClientId lister = 0;
  auto [client, fd] = ListParked(&lister);
  const int wait_fd = waiting_fd_;
  server_.expire(std::chrono::steady_clock::now() + AdminServer::kStreamTimeout +
                 std::chrono::seconds(1));
  EXPECT_EQ(server_.client_count(), 0u);
  EXPECT_FALSE(watcher_.watched.count(wait_fd));
  EXPECT_FALSE(watcher_.watched.count(fd));
  EXPECT_FALSE(server_.on_ready(wait_fd)) << "a stale wakeup is nobody's";
}

// A follower that asks for a list cannot take events in the middle of it: it is closed
// rather than get an event inside the list's stream.
TEST_F(AdminServerTest, AnEventDoesNotGoIntoAStream) {
  auto [client, fd] = Connect();
  Follow(client, fd);
  Send(client, R"({"op":"list"})");
  server_.on_ready(fd);
  server_.push_event(R"({"seq":1})");
  EXPECT_EQ(server_.client_count(), 0u);
}

}  // namespace
}  // namespace ks
