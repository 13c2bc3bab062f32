// The admin socket's server side: accepting clients, reading one request at a time, who
// may change state, replies now or later (a launch waits for systemd), and event streams.
// Every way a client ends (it hangs up, a reply or pushed event cannot be delivered) goes
// through one close path, which forgets everything about it at once: a later client that
// gets the same fd number inherits nothing (no stream, no pending reply).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "killswitch/fd.hpp"
#include "killswitch/ipc.hpp"

namespace ks {

// What the server needs from the event loop: readiness of the fds it owns.
class FdWatcher {
 public:
  virtual ~FdWatcher() = default;
  virtual void watch(int fd) = 0;
  virtual void unwatch(int fd) = 0;
};

class AdminServer {
 public:
  // A client for as long as its connection lives; never re-used (unlike its fd number).
  using ClientId = std::uint64_t;
  // The reply as JSON text, or nothing when it comes later through reply_later().
  using Handler = std::function<std::optional<std::string>(ClientId, const ipc::Request&,
                                                           const ipc::PeerCred&)>;

  static constexpr std::size_t kMaxClients = 256;

  AdminServer(FdWatcher& watcher, std::optional<gid_t> admin_gid, Handler handler);

  // Creates the socket at path (mode 0666: who may do what is decided per request) and
  // listens. Throws ks::Error.
  void listen(const std::string& path);
  int listen_fd() const { return listen_fd_.get(); }
  // Takes a connected socket as a client (what accepting does; tests use socketpairs).
  ClientId adopt(UniqueFd connection);

  // Dispatch: true when fd is the listening socket or a client and was handled.
  bool on_ready(int fd);

  // Ends the client: unwatched, closed, no longer following, no reply pending.
  void close_client(ClientId client);

  // A deferred reply; dropped when the client has gone in the meantime.
  void reply_later(ClientId client, const nlohmann::json& reply);
  // The client gets every event pushed from now on.
  void follow(ClientId client);
  // Sends {"event": event} to every following client; one that cannot take it is closed
  // (too slow or gone: its stream ends rather than block the daemon).
  void push_event(std::string_view event_json);

  std::size_t client_count() const { return clients_.size(); }
  bool is_following(ClientId client) const;

 private:
  struct Client {
    UniqueFd fd;
    ClientId id = 0;
    bool awaiting_reply = false;
    bool following = false;
  };

  void accept_all();
  void on_request(Client& client);
  // Sends text to the client; on failure closes it and returns false.
  bool send_or_close(Client& client, std::string_view text);
  Client* find(ClientId id);

  FdWatcher& watcher_;
  std::optional<gid_t> admin_gid_;
  Handler handler_;
  UniqueFd listen_fd_;
  std::map<int, Client> clients_;  // by fd
  ClientId next_id_ = 1;
};

}  // namespace ks
