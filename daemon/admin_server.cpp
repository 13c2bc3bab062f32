#include "admin_server.hpp"

#include <malloc.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "killswitch/error.hpp"
#include "killswitch/json_text.hpp"

namespace ks {

namespace {

// A big reply (an events query of thousands) leaves thousands of small freed blocks in the
// heap; their pages go back after it, so that ksd's resident memory stays what its state
// needs (lists are made and trimmed after by ListMaker's threads).
constexpr std::size_t kTrimAfterReplyBytes = 1024 * 1024;

}  // namespace

AdminServer::AdminServer(FdWatcher& watcher, std::optional<gid_t> admin_gid, Handler handler)
    : watcher_(watcher), admin_gid_(admin_gid), handler_(std::move(handler)) {}

void AdminServer::listen(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) throw Error("socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  listen_fd_ = UniqueFd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listen_fd_) throw_errno("socket");
  ::unlink(path.c_str());  // stale socket of a dead ksd; the lock proves none is running
  if (::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    throw_errno("cannot bind admin socket " + path);
  // Anyone may connect: read-only requests and launching oneself are for everybody;
  // changes are checked per request with SO_PEERCRED.
  if (::chmod(path.c_str(), 0666) != 0) throw_errno("chmod " + path);
  if (::listen(listen_fd_.get(), 64) != 0) throw_errno("listen");
  watcher_.watch(listen_fd_.get());
}

AdminServer::ClientId AdminServer::adopt(UniqueFd connection) {
  const int fd = connection.get();
  const ClientId id = next_id_++;
  watcher_.watch(fd);
  clients_[fd] = Client{std::move(connection), id, false, false, nullptr};
  return id;
}

bool AdminServer::on_ready(int fd) {
  if (listen_fd_ && fd == listen_fd_.get()) {
    accept_all();
    return true;
  }
  if (parked_.contains(fd)) {
    unpark(fd);
    return true;
  }
  auto it = clients_.find(fd);
  if (it == clients_.end()) return false;
  if (it->second.stream)
    pump_stream(it->second);
  else
    on_request(it->second);
  return true;
}

void AdminServer::accept_all() {
  for (;;) {
    UniqueFd client(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!client) break;
    if (clients_.size() >= kMaxClients) continue;  // closes it: no fd exhaustion
    const int fd = client.get();
    try {
      adopt(std::move(client));
    } catch (const Error&) {
      // Not watchable (epoll full?): the connection is closed, the server goes on.
      continue;
    }
    // A client sends its request right after connecting: read it now rather than after
    // another turn of the loop (which may be a turn of someone's list).
    if (auto it = clients_.find(fd); it != clients_.end()) on_request(it->second);
  }
}

void AdminServer::close_client(ClientId client) {
  Client* c = find(client);
  if (!c) return;
  const int fd = c->fd.get();
  watcher_.unwatch(fd);
  if (c->stream && c->stream->parked_on >= 0) {  // (the source, and its fd, go with it)
    watcher_.unwatch(c->stream->parked_on);
    parked_.erase(c->stream->parked_on);
  }
  clients_.erase(fd);  // closes it, and with it its stream and any pending reply
}

AdminServer::Client* AdminServer::find(ClientId id) {
  for (auto& [fd, client] : clients_)
    if (client.id == id) return &client;
  return nullptr;
}

bool AdminServer::is_following(ClientId client) const {
  for (const auto& [fd, c] : clients_)
    if (c.id == client) return c.following;
  return false;
}

bool AdminServer::is_stream_fd(int fd) const {
  auto it = clients_.find(fd);
  return it != clients_.end() && it->second.stream != nullptr;
}

bool AdminServer::is_parked(ClientId client) const {
  for (const auto& [fd, c] : clients_)
    if (c.id == client) return c.stream && c.stream->parked_on >= 0;
  return false;
}

bool AdminServer::is_streaming(ClientId client) const {
  for (const auto& [fd, c] : clients_)
    if (c.id == client) return c.stream != nullptr;
  return false;
}

bool AdminServer::send_or_close(Client& client, std::string_view text) {
  try {
    ipc::send_text(client.fd.get(), text);
    return true;
  } catch (const Error&) {
    close_client(client.id);
    return false;
  }
}

void AdminServer::on_request(Client& client) {
  const int fd = client.fd.get();
  // One buffer for every request, never filled in advance: a new zero-filled 256 KiB
  // buffer per request was an mmap, 64 page faults and an munmap, ~1 ms of each launch on
  // these VMs (and again for the read that finds the client gone).
  if (!receive_buffer_) receive_buffer_.reset(new char[kReceiveBufferBytes]);
  char* const buf = receive_buffer_.get();
  ssize_t n = ::recv(fd, buf, kReceiveBufferBytes, MSG_TRUNC);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    close_client(client.id);
    return;
  }
  if (client.awaiting_reply) {
    // One request at a time per connection: answers must not overtake each other.
    send_or_close(
        client, ipc::message_text({{"ok", false},
                                   {"error", "a launch is still in progress on this connection"}}));
    return;
  }
  const ClientId id = client.id;
  std::string reply;  // JSON text
  try {
    ipc::PeerCred peer = ipc::peer_credentials(fd);
    std::string error;
    std::optional<ipc::Request> request;
    if (static_cast<std::size_t>(n) > ipc::kMaxMessageBytes) {
      error = "request too large";
    } else {
      request = ipc::parse_request(std::string(buf, static_cast<std::size_t>(n)), error);
    }
    if (!request) {
      reply = ipc::message_text({{"ok", false}, {"error", error}});
    } else if (ipc::op_changes_state(request->op) && !ipc::may_change(peer, admin_gid_)) {
      reply = ipc::message_text(
          {{"ok", false},
           {"error", std::string("permission denied: this request needs root or membership "
                                 "in the group ") +
                         ipc::kAdminGroup}});
    } else {
      // Waiting from before the handler runs: a reply_later() from inside it (a callback
      // that fires at once) finds the client waiting.
      client.awaiting_reply = true;
      std::optional<Reply> now = handler_(id, *request, peer);
      if (!now) return;  // answered later (reply_later)
      if (now->stream) {
        if (Client* c = find(id)) start_stream(*c, std::move(now->stream));
        return;
      }
      reply = std::move(now->text);
    }
  } catch (const std::exception& e) {
    reply = ipc::message_text({{"ok", false}, {"error", e.what()}});
  }
  // Looked up again: what the handler did may have changed the client table.
  Client* c = find(id);
  if (c) {
    c->awaiting_reply = false;
    send_or_close(*c, reply);
  }
  if (reply.size() > kTrimAfterReplyBytes) {
    reply = std::string();
    ::malloc_trim(0);
  }
}

void AdminServer::start_stream(Client& client, std::unique_ptr<TextSource> source) {
  auto stream = std::make_unique<Stream>();
  stream->source = std::move(source);
  stream->message = ipc::kStreamHeader;
  stream->deadline = std::chrono::steady_clock::now() + kStreamTimeout;
  client.stream = std::move(stream);
  // Room for a dozen fragments in flight (the receiver's queue holds about that many): fewer
  // turns of "buffer full, wait for the reader". SO_SNDBUFFORCE needs CAP_NET_ADMIN (ksd
  // has it), SO_SNDBUF is capped by net.core.wmem_max; either may fail, which only means
  // more turns.
  const int buffer_bytes = static_cast<int>(16 * ipc::kFragmentBytes);
  const int fd = client.fd.get();
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer_bytes, sizeof(buffer_bytes)) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof(buffer_bytes));
  watcher_.watch_output(fd, true);
  pump_stream(client);
}

void AdminServer::pump_stream(Client& client) {
  Stream& s = *client.stream;
  const ClientId id = client.id;
  std::size_t sent = 0;
  // A turn ends after kStreamTurn of work too: how long another client may wait for its
  // answer while a list is made does not depend on how fast this machine makes one.
  const auto turn_ends = std::chrono::steady_clock::now() + kStreamTurn;
  bool time_is_up = false;
  try {
    while (sent < kStreamBytesPerTurn && !time_is_up) {
      if (s.message.empty()) {
        // The next message: up to a fragment of text after the tag byte; what the source
        // made beyond that (part of an app) carries over into the message after it.
        s.message.assign(1, ipc::kStreamData);
        s.message += s.text;
        s.text.clear();
        while (!s.done && s.message.size() <= ipc::kFragmentBytes && !time_is_up) {
          const std::size_t before = s.message.size();
          s.done = !s.source->next(s.message);
          // A source with nothing yet (a step of its own work done) gives the turn to the
          // loop's other fds; it goes on at the next turn, or once what it waits for is done.
          if (!s.done && s.message.size() == before && before == 1) {
            s.message.clear();
            if (const int wait_fd = s.source->waiting_on(); wait_fd >= 0) park(client, wait_fd);
            return;
          }
          time_is_up = std::chrono::steady_clock::now() >= turn_ends;
        }
        if (!s.done && s.message.size() == 1) {  // (no text yet, the turn over)
          s.message.clear();
          return;
        }
        if (s.message.size() > 1 + ipc::kFragmentBytes) {
          s.text.assign(s.message, 1 + ipc::kFragmentBytes);
          s.message.resize(1 + ipc::kFragmentBytes);
        }
        if (s.message.size() == 1) {  // no text left: the end, with the length to check
          s.message = ipc::kStreamEnd + std::to_string(s.total);
        } else {
          s.total += s.message.size() - 1;
        }
      }
      const ssize_t n =
          ::send(client.fd.get(), s.message.data(), s.message.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;  // on when there is room
      if (n != static_cast<ssize_t>(s.message.size())) {
        close_client(id);
        return;
      }
      sent += s.message.size();
      if (s.message.front() == ipc::kStreamEnd) break;
      s.message.clear();
    }
  } catch (const std::exception& e) {
    const std::string error = ipc::kStreamError + std::string(e.what());
    ::send(client.fd.get(), error.data(), error.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    close_client(id);
    return;
  }
  if (s.message.empty() || s.message.front() != ipc::kStreamEnd) return;  // more next turn
  // (What a list's source held was made and freed by its own thread, which trims after it:
  // ListMaker.)
  client.stream.reset();
  client.awaiting_reply = false;
  watcher_.watch_output(client.fd.get(), false);
}

void AdminServer::park(Client& client, int wait_fd) {
  // Not watched at all meanwhile: a writable (or readable) client fd would wake the loop on
  // every turn for nothing. A client that hangs up meanwhile is seen once the wait is over.
  watcher_.unwatch(client.fd.get());
  watcher_.watch(wait_fd);  // throws: the request's handling closes the client
  client.stream->parked_on = wait_fd;
  parked_[wait_fd] = client.fd.get();
}

void AdminServer::unpark(int wait_fd) {
  const auto parked = parked_.find(wait_fd);
  const int fd = parked->second;
  parked_.erase(parked);
  watcher_.unwatch(wait_fd);
  Client& client = clients_.at(fd);
  client.stream->parked_on = -1;
  // Its next turn comes when the loop finds it writable, after the other ready fds.
  try {
    watcher_.watch(fd);
    watcher_.watch_output(fd, true);
  } catch (const Error&) {
    close_client(client.id);  // (not watchable: it could never be served)
  }
}

void AdminServer::expire(std::chrono::steady_clock::time_point now) {
  std::vector<ClientId> late;
  for (const auto& [fd, c] : clients_)
    if (c.stream && c.stream->deadline < now) late.push_back(c.id);
  for (ClientId id : late) close_client(id);
}

void AdminServer::reply_later(ClientId client, const nlohmann::json& reply) {
  Client* c = find(client);
  if (!c || !c->awaiting_reply) return;  // the caller has gone
  c->awaiting_reply = false;
  send_or_close(*c, ipc::message_text(reply));
}

void AdminServer::follow(ClientId client) {
  if (Client* c = find(client)) c->following = true;
}

void AdminServer::push_event(std::string_view event_json) {
  std::string text;
  JsonText(text).begin_object().key("event").raw(event_json).end_object();
  std::vector<ClientId> following;
  for (const auto& [fd, c] : clients_)
    if (c.following) following.push_back(c.id);
  for (ClientId id : following) {
    Client* c = find(id);
    // No waiting for a follower: one that cannot take an event at once has fallen behind
    // (or gone), and its stream ends rather than hold up the daemon.
    // One that is taking a streamed reply (a list asked for while following) cannot take
    // an event in the middle of it: its stream ends too.
    if (c && (c->stream || !ipc::try_send_text(c->fd.get(), text))) close_client(id);
  }
}

}  // namespace ks
