// The admin socket's server side: accepting clients, reading one request at a time, who
// may change state, replies now or later (a launch waits for systemd), and event streams.
// Every way a client ends (it hangs up, a reply or pushed event cannot be delivered) goes
// through one close path, which forgets everything about it at once: a later client that
// gets the same fd number inherits nothing (no stream, no pending reply).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
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
  // Input only (false), or output only (true): a client whose reply is being streamed is
  // watched for room to write, and its next request waits in the socket until it is done.
  virtual void watch_output(int fd, bool output) = 0;
};

// A reply made part by part (ksctl list): the server asks for the next part when the
// client can take more, so the daemon never holds the whole text and serves its other
// clients (status, events, launches) in between.
class TextSource {
 public:
  virtual ~TextSource() = default;
  // Appends the next part of the text to out; false when the text is complete (nothing
  // appended). True with nothing appended: a step of the source's own work is done, and
  // the server asks again at the loop's next turn. Throws ks::Error: the client is told so
  // and closed.
  virtual bool next(std::string& out) = 0;
  // While the source waits for work done elsewhere (a thread reading the kernel's maps):
  // an fd that becomes readable when it can go on. The server then leaves the client alone
  // (no turns of the loop spent asking) until that fd is ready. -1: not waiting.
  virtual int waiting_on() const { return -1; }
};

// What a request's handler answers: JSON text at once, or a source to stream.
struct Reply {
  Reply(std::string json_text) : text(std::move(json_text)) {}  // NOLINT: implicit on purpose
  Reply(std::unique_ptr<TextSource> source) : stream(std::move(source)) {}  // NOLINT
  std::string text;
  std::unique_ptr<TextSource> stream;
};

class AdminServer {
 public:
  // A client for as long as its connection lives; never re-used (unlike its fd number).
  using ClientId = std::uint64_t;
  // The reply, or nothing when it comes later through reply_later().
  using Handler =
      std::function<std::optional<Reply>(ClientId, const ipc::Request&, const ipc::PeerCred&)>;

  static constexpr std::size_t kMaxClients = 256;
  // A streamed reply not taken within this time ends (a client that stopped reading cannot
  // hold a snapshot of the list in ksd's memory for ever).
  static constexpr std::chrono::seconds kStreamTimeout{30};
  // At most this much of a stream is sent per turn of the loop, then the other fds get theirs.
  static constexpr std::size_t kStreamBytesPerTurn = ipc::kFragmentBytes;
  // ... or after this much time making it (10,000 apps: a list is ~40 ms of such turns).
  static constexpr std::chrono::microseconds kStreamTurn{250};

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

  // Ends streams whose client has not taken them by kStreamTimeout.
  void expire(std::chrono::steady_clock::time_point now);

  std::size_t client_count() const { return clients_.size(); }
  bool is_following(ClientId client) const;
  bool is_streaming(ClientId client) const;
  // The fd is a client's that is taking a stream: the loop serves it after the others.
  bool is_stream_fd(int fd) const;
  // The client's stream waits for its source (TextSource::waiting_on).
  bool is_parked(ClientId client) const;

 private:
  struct Stream {
    std::unique_ptr<TextSource> source;
    std::string message;    // the next message to send (tag byte and text), when not empty
    std::string text;       // made by the source, not yet in a message
    std::size_t total = 0;  // bytes of text in messages so far
    bool done = false;      // the source said the text is complete
    int parked_on = -1;     // the source's waiting_on() fd, watched instead of the client
    std::chrono::steady_clock::time_point deadline;
  };
  struct Client {
    UniqueFd fd;
    ClientId id = 0;
    bool awaiting_reply = false;
    bool following = false;
    std::unique_ptr<Stream> stream;  // a reply being streamed
  };

  void accept_all();
  void on_request(Client& client);
  void start_stream(Client& client, std::unique_ptr<TextSource> source);
  // Sends what the client can take of its stream now, up to kStreamBytesPerTurn.
  void pump_stream(Client& client);
  // The stream waits for wait_fd: the client's fd is not watched until it is ready.
  void park(Client& client, int wait_fd);
  // wait_fd is ready: the client is watched for room to write again, its stream goes on.
  void unpark(int wait_fd);
  // Sends text to the client; on failure closes it and returns false.
  bool send_or_close(Client& client, std::string_view text);
  Client* find(ClientId id);

  // A request's bytes; one more than the largest request, so that MSG_TRUNC tells a larger
  // one apart.
  static constexpr std::size_t kReceiveBufferBytes = ipc::kMaxMessageBytes + 1;
  std::unique_ptr<char[]> receive_buffer_;
  FdWatcher& watcher_;
  std::optional<gid_t> admin_gid_;
  Handler handler_;
  UniqueFd listen_fd_;
  std::map<int, Client> clients_;  // by fd
  std::map<int, int> parked_;      // a parked stream's wait fd -> its client's fd
  ClientId next_id_ = 1;
};

}  // namespace ks
