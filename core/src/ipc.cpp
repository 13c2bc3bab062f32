#include "killswitch/ipc.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>
#include <tuple>
#include <utility>

#include "killswitch/config.hpp"
#include "killswitch/error.hpp"

namespace ks::ipc {

std::string default_socket_path() {
  const char* env = std::getenv(kSocketEnv);
  return env && *env ? env : kDefaultSocketPath;
}

std::optional<Request> parse_request(const std::string& bytes, std::string& error) {
  if (bytes.size() > kMaxMessageBytes) {
    error = "request too large";
    return std::nullopt;
  }
  // The JSON parser stops at a NUL byte; a message must be one JSON object, nothing more.
  if (bytes.find('\0') != std::string::npos) {
    error = "request contains a NUL byte";
    return std::nullopt;
  }
  nlohmann::json j = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    error = "request is not a JSON object";
    return std::nullopt;
  }
  auto op = j.find("op");
  if (op == j.end() || !op->is_string()) {
    error = "request has no string field \"op\"";
    return std::nullopt;
  }
  Request r;
  const std::string name = op->get<std::string>();
  if (name == "status") {
    r.op = Op::kStatus;
  } else if (name == "list") {
    r.op = Op::kList;
  } else if (name == "reload") {
    r.op = Op::kReload;
  } else if (name == "events") {
    r.op = Op::kEvents;
    if (auto since = j.find("since"); since != j.end()) {
      if (!since->is_number_unsigned()) {
        error = "\"since\" must be a sequence number (0 or more)";
        return std::nullopt;
      }
      r.since = since->get<std::uint64_t>();
    }
    if (auto limit = j.find("limit"); limit != j.end()) {
      if (!limit->is_number_unsigned() || limit->get<std::uint64_t>() == 0 ||
          limit->get<std::uint64_t>() > kMaxEventsPerReply) {
        error = "\"limit\" must be 1.." + std::to_string(kMaxEventsPerReply);
        return std::nullopt;
      }
      r.limit = limit->get<std::size_t>();
    }
    if (auto follow = j.find("follow"); follow != j.end()) {
      if (!follow->is_boolean()) {
        error = "\"follow\" must be true or false";
        return std::nullopt;
      }
      r.follow = follow->get<bool>();
    }
  } else if (name == "launch" || name == "protect") {
    r.op = name == "launch" ? Op::kLaunch : Op::kProtect;
    if (auto pid = j.find("pid"); r.op == Op::kProtect || pid != j.end()) {
      if (pid == j.end() || !pid->is_number_integer() || pid->get<long long>() <= 0 ||
          pid->get<long long>() > 0x3fffffff) {
        error = "\"pid\" must be a positive process id";
        return std::nullopt;
      }
      r.pid = static_cast<pid_t>(pid->get<long long>());
    }
    if (auto exe = j.find("executable"); exe != j.end() && r.op == Op::kLaunch) {
      if (!exe->is_string() || exe->get_ref<const std::string&>().empty() ||
          exe->get_ref<const std::string&>().front() != '/' ||
          exe->get_ref<const std::string&>().size() > 4096) {
        error = "\"executable\" must be an absolute path";
        return std::nullopt;
      }
      r.executable = exe->get<std::string>();
    }
    auto profile = j.find("profile");
    if (profile == j.end()) {
      r.profile = std::string(kDefaultProfile);
    } else if (!profile->is_string() || !is_valid_profile_name(profile->get<std::string>())) {
      error = "\"profile\" must be a profile name ([A-Za-z0-9_], 1-31 characters)";
      return std::nullopt;
    } else {
      r.profile = profile->get<std::string>();
    }
    if (auto probe = j.find("verify_probe"); probe != j.end() && r.op == Op::kLaunch) {
      if (!probe->is_boolean()) {
        error = "\"verify_probe\" must be true or false";
        return std::nullopt;
      }
      r.verify_probe = probe->get<bool>();
      if (r.verify_probe) r.profile = std::string(kVerifyProfile);
    }
    auto argv = j.find("argv");
    if (argv != j.end()) {
      if (!argv->is_array() || argv->size() > 4096) {
        error = "\"argv\" must be an array of strings";
        return std::nullopt;
      }
      for (const auto& a : *argv) {
        if (!a.is_string()) {
          error = "\"argv\" must be an array of strings";
          return std::nullopt;
        }
        r.argv.push_back(a.get<std::string>());
      }
    }
  } else {
    error = "unknown op \"" + name.substr(0, 64) + "\"";
    return std::nullopt;
  }
  return r;
}

PeerCred peer_credentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) throw_errno("SO_PEERCRED");
  PeerCred peer{cred.pid, cred.uid, cred.gid, {}};
  // Supplementary groups; on any failure the peer simply has none (fewer rights, never more).
  std::vector<gid_t> groups(64);
  socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  int r = ::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen);
  if (r != 0 && errno == ERANGE) {
    groups.resize(glen / sizeof(gid_t));
    r = ::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen);
  }
  if (r == 0) {
    groups.resize(glen / sizeof(gid_t));
    peer.groups = groups;
  }
  return peer;
}

bool may_change(const PeerCred& peer, std::optional<gid_t> admin_gid) {
  if (peer.uid == 0) return true;
  if (!admin_gid) return false;
  return peer.gid == *admin_gid ||
         std::find(peer.groups.begin(), peer.groups.end(), *admin_gid) != peer.groups.end();
}

bool op_changes_state(Op op) { return op == Op::kReload || op == Op::kProtect; }

UniqueFd connect_to(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) throw Error("socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    throw_errno("cannot reach ksd at " + path);
  return fd;
}

namespace {

// A reply larger than this (ksctl list with thousands of apps) goes as a header message
// {"fragments": N, "bytes": B} followed by N raw messages holding the JSON text's bytes
// (one SOCK_SEQPACKET message must fit the socket buffer, about 200 KiB by default). Raw,
// not JSON strings: the text is written once and parsed once.
constexpr int kSendTimeoutMs = 5000;

using Deadline = std::chrono::steady_clock::time_point;

void send_one(int fd, std::string_view text, Deadline deadline) {
  for (;;) {
    ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(text.size())) return;
    if (n >= 0) throw Error("short send to the admin socket");
    if (errno == EINTR) continue;
    if (errno != EAGAIN) throw_errno("cannot send on the admin socket");
    // The peer reads slower than we write (a big reply): wait a little, not forever.
    // One deadline for the whole message: a client that stops reading cannot hold the
    // daemon longer than that.
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    pollfd p{fd, POLLOUT, 0};
    int r = 0;
    if (left > 0) {
      do r = ::poll(&p, 1, static_cast<int>(left));
      while (r < 0 && errno == EINTR);
    }
    if (r <= 0) throw Error("the other side does not read (send timed out)");
  }
}

}  // namespace

void send_text(int fd, std::string_view text) {
  const Deadline deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kSendTimeoutMs);
  if (text.size() <= kFragmentBytes) return send_one(fd, text, deadline);
  if (text.size() > kMaxAssembledBytes) throw Error("message too large");
  const std::size_t count = (text.size() + kFragmentBytes - 1) / kFragmentBytes;
  // Room for a dozen fragments in flight (the receiver's queue holds about that many,
  // net.unix.max_dgram_qlen): fewer round trips of "buffer full, wait for the reader".
  // SO_SNDBUFFORCE needs CAP_NET_ADMIN (ksd has it); SO_SNDBUF is capped by
  // net.core.wmem_max. Either may fail: the default buffer only means more waits.
  const int buffer_bytes = static_cast<int>(16 * kFragmentBytes);
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer_bytes, sizeof(buffer_bytes)) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof(buffer_bytes));
  send_one(fd, nlohmann::json{{"fragments", count}, {"bytes", text.size()}}.dump(), deadline);
  for (std::size_t at = 0; at < text.size(); at += kFragmentBytes)
    send_one(fd, text.substr(at, kFragmentBytes), deadline);
}

bool try_send_text(int fd, std::string_view text) {
  if (text.size() > kFragmentBytes) return false;
  for (;;) {
    ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(text.size())) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

std::string message_text(const nlohmann::json& value) {
  // Strings from the system need not be UTF-8 (a command line, a task name): JSON text
  // must be, and nlohmann-json would throw. Replace what is not (U+FFFD), never fail.
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void send_message(int fd, const nlohmann::json& message) { send_text(fd, message_text(message)); }

namespace {

// The first message of a reply, when it is a fragment header: the number of fragments and
// of bytes it announces (checked against each other and the limit).
std::optional<std::pair<std::size_t, std::size_t>> fragment_header(const std::string& first) {
  // A header is a few dozen bytes; anything longer is a whole reply (not parsed here).
  if (first.size() > 100 || first.find("\"fragments\"") == std::string::npos) return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(first, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  auto fragments = j.find("fragments");
  if (fragments == j.end() || j.size() != 2) return std::nullopt;
  auto bytes = j.find("bytes");
  if (!fragments->is_number_unsigned() || bytes == j.end() || !bytes->is_number_unsigned())
    throw Error("malformed answer (bad fragment header)");
  const auto count = fragments->get<std::size_t>();
  const auto total = bytes->get<std::size_t>();
  if (total > kMaxAssembledBytes || count != (total + kFragmentBytes - 1) / kFragmentBytes)
    throw Error("malformed answer (bad fragment header)");
  return std::pair{count, total};
}

}  // namespace

ReplyReader::ReplyReader(int fd, int timeout_ms)
    : fd_(fd), timeout_ms_(timeout_ms), buf_(new char[kMaxMessageBytes]) {}

// One message into buf_ (one buffer for all of them: a string resized to the maximum for
// each would zero-fill it each time); its length.
std::size_t ReplyReader::receive() {
  pollfd p{fd_, POLLIN, 0};
  int r;
  do r = ::poll(&p, 1, timeout_ms_);
  while (r < 0 && errno == EINTR);
  if (r < 0) throw_errno("poll");
  if (r == 0) throw Error("no answer within " + std::to_string(timeout_ms_) + " ms");
  ssize_t n = ::recv(fd_, buf_.get(), kMaxMessageBytes, 0);
  if (n < 0) throw_errno("cannot read the answer");
  if (n == 0) throw Error("the other side closed the connection");
  return static_cast<std::size_t>(n);
}

bool ReplyReader::next(std::string_view& part) {
  switch (state_) {
    case State::kDone:
      return false;
    case State::kFirst: {
      const std::string_view first(buf_.get(), receive());
      if (first == kStreamHeader) {
        state_ = State::kStream;
        return next(part);
      }
      const auto header = fragment_header(std::string(first));
      if (!header) {
        state_ = State::kDone;
        part = first;
        return true;
      }
      std::tie(fragments_left_, announced_) = *header;
      state_ = State::kFragments;
      return next(part);
    }
    case State::kFragments: {
      if (fragments_left_ == 0) {
        if (received_ != announced_) throw Error("malformed answer (fewer bytes than announced)");
        state_ = State::kDone;
        return false;
      }
      --fragments_left_;
      part = std::string_view(buf_.get(), receive());
      if ((received_ += part.size()) > announced_)
        throw Error("malformed answer (more bytes than announced)");
      return true;
    }
    case State::kStream:
      for (;;) {
        const std::size_t n = receive();
        const std::string_view body(buf_.get() + 1, n - 1);
        switch (buf_[0]) {
          case kStreamData:
            if ((received_ += body.size()) > kMaxAssembledBytes)
              throw Error("malformed answer (stream too long)");
            if (body.empty()) continue;
            part = body;
            return true;
          case kStreamEnd:
            if (body != std::to_string(received_))
              throw Error("malformed answer (stream of " + std::string(body.substr(0, 20)) +
                          " bytes, received " + std::to_string(received_) + ")");
            state_ = State::kDone;
            return false;
          case kStreamError:
            throw Error(std::string(body.substr(0, 1000)));
          default:
            throw Error("malformed answer (bad stream message)");
        }
      }
  }
  return false;
}

std::string receive_text(int fd, int timeout_ms) {
  ReplyReader reader(fd, timeout_ms);
  std::string text;
  std::string_view part;
  while (reader.next(part)) text.append(part);
  return text;
}

nlohmann::json receive_message(int fd, int timeout_ms) {
  nlohmann::json j = nlohmann::json::parse(receive_text(fd, timeout_ms), nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error("malformed answer (not a JSON object)");
  return j;
}

std::string call_text(const std::string& socket_path, const nlohmann::json& request,
                      int timeout_ms) {
  UniqueFd fd = connect_to(socket_path);
  send_message(fd.get(), request);
  return receive_text(fd.get(), timeout_ms);
}

nlohmann::json call(const std::string& socket_path, const nlohmann::json& request, int timeout_ms) {
  UniqueFd fd = connect_to(socket_path);
  send_message(fd.get(), request);
  return receive_message(fd.get(), timeout_ms);
}

}  // namespace ks::ipc
