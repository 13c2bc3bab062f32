// The admin protocol between ksd and its clients (ksrun, ksctl): SOCK_SEQPACKET messages on
// a unix socket, request then reply. A request and a small reply are one JSON object each;
// a large reply comes in parts (the list streamed: kStreamHeader, then tagged messages;
// events: a fragments header, then raw parts; see below and docs/design.md). Callers are
// identified by SO_PEERCRED, never by anything they claim in a message.
//
//   request : {"op": "status"} | {"op": "list"} | {"op": "reload"}
//             | {"op": "launch", "profile": "default", "argv": ["qbittorrent"]}
//             | {"op": "launch", "verify_probe": true}   (ksd's tunnel-less profile)
//             | {"op": "protect", "pid": 4242, "profile": "default"}
//             | {"op": "events", "since": 0, "limit": 1000, "follow": false}
//   reply   : {"ok": true, ...} | {"ok": false, "error": "what went wrong"}
#pragma once

#include <sys/types.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "killswitch/fd.hpp"

namespace ks::ipc {

inline constexpr const char* kDefaultSocketPath = "/run/killswitch/ksd.sock";
inline constexpr const char* kSocketEnv = "KILLSWITCH_SOCKET";
inline constexpr std::size_t kMaxMessageBytes = 256 * 1024;
inline constexpr const char* kAdminGroup = "killswitch";

// $KILLSWITCH_SOCKET if set and non-empty, otherwise /run/killswitch/ksd.sock.
std::string default_socket_path();

enum class Op { kStatus, kList, kReload, kLaunch, kProtect, kEvents };

inline constexpr std::size_t kMaxEventsPerReply = 2000;

struct Request {
  Op op = Op::kStatus;
  std::string profile;            // launch, protect
  std::vector<std::string> argv;  // launch: for the record (list, logs), never executed by ksd
  pid_t pid = 0;                  // protect; launch: ksrun's own pid, as it sees it
  // launch: the command's executable, when ksrun asks ksd to look for copies of it the
  // caller runs unprotected (its single-instance check; answered only when `pid` is the
  // caller's pid as ksd sees it, i.e. both see the same processes)
  std::string executable;
  std::uint64_t since = 0;                 // events: the first sequence number wanted
  std::size_t limit = kMaxEventsPerReply;  // events: at most this many, the newest
  bool follow = false;                     // events: keep the connection, push new ones
  bool verify_probe = false;               // launch: into ksd's tunnel-less kVerifyProfile
};

// Validates a raw message. Returns the request, or sets `error` to a message fit for the
// reply. Garbage, wrong types, unknown ops and oversized fields are all refused.
std::optional<Request> parse_request(const std::string& bytes, std::string& error);

struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (SO_PEERGROUPS)
};
PeerCred peer_credentials(int fd);

// Changes (reload, teardown, ...) are for root and members of the killswitch group.
bool may_change(const PeerCred& peer, std::optional<gid_t> admin_gid);
std::optional<gid_t> admin_group_id();
bool op_changes_state(Op op);

// Client side.
UniqueFd connect_to(const std::string& path);  // throws ks::Error naming the path
void send_message(int fd, const nlohmann::json& message);
// A message already written as JSON text (a large reply, built without a JSON tree).
void send_text(int fd, std::string_view text);
// One message of at most one fragment, now or never: false when the socket cannot take it
// at once (the peer does not keep up) or is broken. For pushed events, which must never
// make the daemon wait for a slow reader.
bool try_send_text(int fd, std::string_view text);
// The JSON text of a message: strings that are not UTF-8 get U+FFFD instead of an exception.
std::string message_text(const nlohmann::json& value);
// A streamed reply (ksctl list with thousands of apps): ksd makes and sends the text part
// by part, serving other clients in between and never holding all of it. A header message
// kStreamHeader, then messages that each begin with a tag byte: kStreamData and up to
// kFragmentBytes of the text; at the end kStreamEnd and the text's length in decimal, or
// kStreamError and why the rest cannot come.
inline constexpr std::string_view kStreamHeader = R"({"stream":true})";
inline constexpr char kStreamData = 'd';
inline constexpr char kStreamEnd = 'e';
inline constexpr char kStreamError = 'x';
inline constexpr std::size_t kFragmentBytes = 64 * 1024;
// The whole of a reply in fragments or streamed, at most (a bound on what a client holds).
inline constexpr std::size_t kMaxAssembledBytes = 64 * 1024 * 1024;

// Waits up to timeout_ms; throws ks::Error on timeout, EOF or a non-JSON message.
nlohmann::json receive_message(int fd, int timeout_ms);
// The reply's text as it came, fragments assembled (not parsed: for a caller that passes
// a large document through). Throws ks::Error on timeout, EOF or bad fragments.
std::string receive_text(int fd, int timeout_ms);
// A reply read part by part as its messages arrive (one part for a reply in one message),
// so that a caller can pass a large reply on while the rest is still coming.
class ReplyReader {
 public:
  ReplyReader(int fd, int timeout_ms);
  // The next part of the reply's text (valid until the next call); false when the reply is
  // complete. Waits up to timeout_ms for each message; throws ks::Error on timeout, EOF, a
  // malformed reply or a stream that ended in an error (after the parts before it).
  bool next(std::string_view& part);
  // True once the first part showed a streamed reply.
  bool streamed() const { return state_ == State::kStream; }

 private:
  enum class State { kFirst, kStream, kFragments, kDone };
  std::size_t receive();

  int fd_;
  int timeout_ms_;
  std::unique_ptr<char[]> buf_;
  State state_ = State::kFirst;
  std::size_t fragments_left_ = 0;  // kFragments
  std::size_t announced_ = 0;       // kFragments: the header's byte count
  std::size_t received_ = 0;        // bytes of text so far
};
nlohmann::json call(const std::string& socket_path, const nlohmann::json& request,
                    int timeout_ms = 10000);
std::string call_text(const std::string& socket_path, const nlohmann::json& request,
                      int timeout_ms = 10000);

}  // namespace ks::ipc
