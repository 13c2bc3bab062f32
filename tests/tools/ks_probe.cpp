// ks-probe: the probe multi-tool of the leak lab (tests/lab/).
//
// Subcommands (each prints exactly ONE JSON summary line on stdout when it ends, also when it
// is stopped with SIGTERM/SIGINT):
//
//   echo-server --tcp IP:PORT --udp IP:PORT ...   echo everything back until killed
//   udp  --dst IP:PORT [--count N] [--duration S] [--interval-ms MS] [--expect-reply]
//        one unconnected socket, sendto() in a loop that never stops on errors
//   tcp  --dst IP:PORT [--count N] [--duration S] [--interval-ms MS] [--timeout-ms MS]
//        every attempt: new socket, connect (with timeout), send a line, wait for its echo
//   connect-time --dst IP:PORT [--udp]            one connect(), its errno and its latency
//   uring --dst IP:PORT [--count N] [--tcp]       the same sends through io_uring: N UDP
//        IORING_OP_SENDMSG (unconnected), or IORING_OP_CONNECT + IORING_OP_SEND; then waits
//        for the echoes with plain recv()
//   prog-query CGROUP ATTACH_TYPE [--effective]   BPF_PROG_QUERY: {"ids":[...]} (for hooks
//                                                 Debian 12's bpftool does not know, e.g. 49)
//   json-get POINTER [--default V]                script helper, not a probe: prints one value
//                                                 of the JSON line on stdin (no jq needed)
//
// Addresses: "198.51.100.1:7000" or "[2001:db8::1]:7000".
// Socket options shared by the client commands: --bind-dev IF (SO_BINDTODEVICE) and
// --src IP (bind() to a source address before sending).
// Long-running commands accept --ready-file PATH: the file is created (atomically, content
// "<pid>\n") once the sockets are set up, so scripts wait on it instead of sleeping.
//
// Error keys are errno names (strerrorname_np: "ENETUNREACH", "EPERM", ...). ks-probe's own
// timeouts are reported as "ETIMEDOUT" (a kernel TCP timeout takes minutes, far longer than
// any --timeout-ms, so in practice every ETIMEDOUT is ours). Non-errno keys: "EOF" (peer
// closed before the echo was complete) and "MISMATCH" (the echo differed from what was sent).
//
// Exit status: 0 when the probe ran (whatever the network did: the JSON is the result),
// 2 on a usage or setup error (the JSON line then has an "error" member).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <liburing.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <list>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/ipc.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Signals. SIGINT/SIGTERM stay blocked except inside ppoll(), so a stop request can never be
// lost between checking the flag and going to sleep. Every wait in this program goes through
// wait_fds(); every socket is non-blocking.

volatile sig_atomic_t g_stop = 0;
sigset_t g_wait_mask;  // the mask ppoll() runs with: the original mask minus INT/TERM

void on_signal(int) { g_stop = 1; }

void setup_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: ppoll returns EINTR
  // A background job of a non-interactive shell starts with SIGINT ignored; sigaction()
  // overrides that, so `kill -INT` works in lab scripts too.
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigprocmask(SIG_BLOCK, &block, &g_wait_mask);
  sigdelset(&g_wait_mask, SIGINT);
  sigdelset(&g_wait_mask, SIGTERM);
}

bool stopping() { return g_stop != 0; }

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double ms_since(Clock::time_point t0) { return ms_between(t0, Clock::now()); }

// Waits for events on fds (may be empty) for at most timeout_ms (< 0: forever). Returns the
// number of ready fds, 0 on timeout or when a stop signal arrived.
int wait_fds(std::vector<pollfd>& fds, double timeout_ms) {
  timespec ts{};
  timespec* tsp = nullptr;
  if (timeout_ms >= 0) {
    auto ns = static_cast<int64_t>(timeout_ms * 1e6);
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
    tsp = &ts;
  }
  int n = ::ppoll(fds.data(), fds.size(), tsp, &g_wait_mask);
  if (n < 0) {
    if (errno == EINTR) return 0;
    ks::throw_errno("ppoll");
  }
  return n;
}

int wait_fd(int fd, short events, double timeout_ms) {
  std::vector<pollfd> fds{{fd, events, 0}};
  return wait_fds(fds, timeout_ms);
}

void sleep_ms(double ms) {
  std::vector<pollfd> none;
  wait_fds(none, ms);
}

// ---------------------------------------------------------------------------------------------
// Helpers

std::string errno_name(int e) {
  if (e == 0) return "0";
  const char* n = ::strerrorname_np(e);
  return n ? std::string(n) : "E" + std::to_string(e);
}

struct Endpoint {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family = AF_UNSPEC;
  std::string text;
};

// "IP:PORT", "[IPv6]:PORT"; with allow_no_port also a bare "IP" / "IPv6" (port 0).
Endpoint parse_endpoint(const std::string& s, bool allow_no_port = false) {
  std::string host = s;
  std::string port;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string::npos) throw ks::Error("bad address '" + s + "': missing ']'");
    host = s.substr(1, close - 1);
    if (close + 1 < s.size()) {
      if (s[close + 1] != ':') throw ks::Error("bad address '" + s + "'");
      port = s.substr(close + 2);
    }
  } else if (std::count(s.begin(), s.end(), ':') == 1) {
    auto colon = s.find(':');
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  if (port.empty() && !allow_no_port) throw ks::Error("bad address '" + s + "': need IP:PORT");
  unsigned long p = 0;
  if (!port.empty()) {
    char* end = nullptr;
    p = std::strtoul(port.c_str(), &end, 10);
    if (*end != '\0' || p > 65535) throw ks::Error("bad port in '" + s + "'");
  }
  Endpoint ep;
  ep.text = s;
  auto* sin = reinterpret_cast<sockaddr_in*>(&ep.ss);
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ep.ss);
  if (::inet_pton(AF_INET, host.c_str(), &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(p));
    ep.len = sizeof(sockaddr_in);
    ep.family = AF_INET;
  } else if (::inet_pton(AF_INET6, host.c_str(), &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(p));
    ep.len = sizeof(sockaddr_in6);
    ep.family = AF_INET6;
  } else {
    throw ks::Error("bad IP address in '" + s + "'");
  }
  return ep;
}

// Thrown for setup failures; carries the errno name for the JSON line.
struct SetupError {
  std::string what;
  int err;
};

[[noreturn]] void setup_fail(const std::string& what, int err = errno) {
  throw SetupError{what, err};
}

void write_ready_file(const std::string& path) {
  if (path.empty()) return;
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) setup_fail("open ready file " + tmp);
  std::fprintf(f, "%d\n", static_cast<int>(::getpid()));
  if (std::fclose(f) != 0) setup_fail("write ready file " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) setup_fail("rename ready file " + path);
}

// Options shared by the client commands.
struct ClientOpts {
  std::string bind_dev;
  std::string src;
};

// Creates a non-blocking socket with the client options applied. Returns the fd, or -errno
// (and sets *stage) when a step fails, so callers can count the failure instead of dying.
int make_socket(int family, int type, const ClientOpts& o, std::string* stage) {
  std::optional<Endpoint> src;
  if (!o.src.empty()) src = parse_endpoint(o.src, /*allow_no_port=*/true);
  int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *stage = "socket";
    return -errno;
  }
  if (!o.bind_dev.empty() && ::setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, o.bind_dev.c_str(),
                                          static_cast<socklen_t>(o.bind_dev.size())) != 0) {
    int e = errno;
    ::close(fd);
    *stage = "bind-dev";
    return -e;
  }
  if (src) {
    if (::bind(fd, reinterpret_cast<sockaddr*>(&src->ss), src->len) != 0) {
      int e = errno;
      ::close(fd);
      *stage = "bind";
      return -e;
    }
  }
  return fd;
}

void add_client_opts(CLI::App* cmd, ClientOpts& o) {
  cmd->add_option("--bind-dev", o.bind_dev, "SO_BINDTODEVICE the socket(s) to this interface");
  cmd->add_option("--src", o.src, "bind the socket(s) to this source IP (or IP:PORT)");
}

using Counters = std::map<std::string, uint64_t>;

// Loop pacing shared by udp and tcp: stop after --count attempts or --duration seconds,
// whichever comes first; without either, 10 attempts.
struct Pacing {
  std::optional<uint64_t> count;
  std::optional<double> duration_s;
  double interval_ms = 10;

  void add(CLI::App* cmd) {
    cmd->add_option("--count", count, "number of attempts (default 10 unless --duration)");
    cmd->add_option("--duration", duration_s, "run for this many seconds");
    cmd->add_option("--interval-ms", interval_ms, "pause between attempt starts (default 10)")
        ->check(CLI::NonNegativeNumber);
  }
  uint64_t max_count() const {
    if (count) return *count;
    return duration_s ? std::numeric_limits<uint64_t>::max() : 10;
  }
  std::optional<Clock::time_point> deadline(Clock::time_point start) const {
    if (!duration_s) return std::nullopt;
    return start + std::chrono::microseconds(static_cast<int64_t>(*duration_s * 1e6));
  }
};

void emit(const json& j) { std::cout << j.dump() << std::endl; }

// ---------------------------------------------------------------------------------------------
// udp

struct UdpOpts {
  std::string dst;
  Pacing pacing;
  bool expect_reply = false;
  double reply_wait_ms = 1000;
  size_t size = 32;
  std::string ready_file;
  ClientOpts client;
};

int run_udp(const UdpOpts& o) {
  Endpoint dst = parse_endpoint(o.dst);
  std::string stage;
  int raw = make_socket(dst.family, SOCK_DGRAM, o.client, &stage);
  if (raw < 0) setup_fail("socket setup failed at step '" + stage + "'", -raw);
  ks::UniqueFd fd(raw);
  write_ready_file(o.ready_file);

  uint64_t attempts = 0, sent = 0, replies = 0;
  Counters errors, recv_errors;
  std::vector<char> buf(65536);
  auto drain = [&] {
    for (;;) {
      ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
      if (n >= 0) {
        ++replies;
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        ++recv_errors[errno_name(errno)];
        if (errno != EINTR) continue;  // queued ICMP errors: keep draining
      }
      return;
    }
  };

  const auto start = Clock::now();
  const auto deadline = o.pacing.deadline(start);
  const uint64_t max = o.pacing.max_count();
  const auto interval = std::chrono::microseconds(static_cast<int64_t>(o.pacing.interval_ms * 1e3));
  auto next = start;
  while (!stopping() && attempts < max) {
    auto now = Clock::now();
    if (deadline && now >= *deadline) break;
    if (now < next) {
      auto until = deadline ? std::min(next, *deadline) : next;
      wait_fd(fd.get(), POLLIN, std::max(0.0, ms_between(now, until)));
      drain();
      continue;
    }
    std::string payload = "ks-probe udp " + std::to_string(attempts) + "\n";
    if (payload.size() < o.size) payload.resize(o.size, '.');
    ++attempts;
    ssize_t n = ::sendto(fd.get(), payload.data(), payload.size(), 0,
                         reinterpret_cast<const sockaddr*>(&dst.ss), dst.len);
    if (n >= 0)
      ++sent;
    else
      ++errors[errno_name(errno)];
    drain();
    next += interval;
    if (next < now) next = now;  // never burst to catch up
  }
  if (o.expect_reply) {
    auto linger = Clock::now();
    while (!stopping() && replies < sent && ms_since(linger) < o.reply_wait_ms) {
      wait_fd(fd.get(), POLLIN, o.reply_wait_ms - ms_since(linger));
      drain();
    }
  }
  drain();
  emit({{"cmd", "udp"},
        {"dst", o.dst},
        {"attempts", attempts},
        {"sent", sent},
        {"errors", errors},
        {"replies", replies},
        {"recv_errors", recv_errors},
        {"duration_ms", ms_since(start)},
        {"interrupted", stopping()}});
  return 0;
}

// ---------------------------------------------------------------------------------------------
// tcp

struct ConnectResult {
  int err = 0;  // 0 = connected
  double ms = 0;
  bool interrupted = false;
};

// Non-blocking connect with a timeout on an already created socket.
ConnectResult timed_connect(int fd, const Endpoint& dst, double timeout_ms) {
  ConnectResult r;
  auto t0 = Clock::now();
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&dst.ss), dst.len) == 0) {
    r.ms = ms_since(t0);
    return r;
  }
  if (errno != EINPROGRESS) {
    r.err = errno;
    r.ms = ms_since(t0);
    return r;
  }
  for (;;) {
    double left = timeout_ms - ms_since(t0);
    if (left <= 0) {
      r.err = ETIMEDOUT;
      break;
    }
    if (wait_fd(fd, POLLOUT, left) > 0) {
      int soerr = 0;
      socklen_t len = sizeof soerr;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
      r.err = soerr;
      break;
    }
    if (stopping()) {
      r.interrupted = true;
      break;
    }
  }
  r.ms = ms_since(t0);
  return r;
}

struct TcpOpts {
  std::string dst;
  Pacing pacing;
  double timeout_ms = 1000;
  std::string ready_file;
  ClientOpts client;
};

int run_tcp(const TcpOpts& o) {
  Endpoint dst = parse_endpoint(o.dst);
  // Validate --src once up front so a typo is a usage error, not N counted failures.
  if (!o.client.src.empty()) parse_endpoint(o.client.src, true);
  write_ready_file(o.ready_file);

  uint64_t attempts = 0, ok = 0, measured = 0;  // measured: attempts that reached connect()
  Counters errors, failed_stage;
  double cms_max = 0, cms_sum = 0, cms_min = std::numeric_limits<double>::infinity();
  std::vector<char> buf(4096);

  const auto start = Clock::now();
  const auto deadline = o.pacing.deadline(start);
  const uint64_t max = o.pacing.max_count();
  const auto interval = std::chrono::microseconds(static_cast<int64_t>(o.pacing.interval_ms * 1e3));
  auto next = start;
  while (!stopping() && attempts < max) {
    auto now = Clock::now();
    if (deadline && now >= *deadline) break;
    if (now < next) {
      sleep_ms(ms_between(now, deadline ? std::min(next, *deadline) : next));
      continue;
    }
    next += interval;
    if (next < now) next = now;

    auto fail = [&](const std::string& stage, int err) {
      ++attempts;
      ++errors[errno_name(err)];
      ++failed_stage[stage];
    };
    std::string stage;
    int raw = make_socket(dst.family, SOCK_STREAM, o.client, &stage);
    if (raw < 0) {
      fail(stage, -raw);
      continue;
    }
    ks::UniqueFd fd(raw);
    ConnectResult c = timed_connect(fd.get(), dst, o.timeout_ms);
    if (c.interrupted) break;  // an attempt cut short by SIGTERM is not counted
    cms_max = std::max(cms_max, c.ms);
    cms_min = std::min(cms_min, c.ms);
    cms_sum += c.ms;
    ++measured;
    if (c.err != 0) {
      fail("connect", c.err);
      continue;
    }
    std::string line = "ks-probe tcp " + std::to_string(attempts) + "\n";
    ssize_t n = ::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(line.size())) {
      fail("send", n < 0 ? errno : EMSGSIZE);
      continue;
    }
    std::string got;
    auto t0 = Clock::now();
    std::string err;
    bool interrupted = false;
    while (got.size() < line.size()) {
      double left = o.timeout_ms - ms_since(t0);
      if (left <= 0) {
        err = "ETIMEDOUT";
        break;
      }
      if (wait_fd(fd.get(), POLLIN, left) == 0) {
        if (stopping()) {
          interrupted = true;
          break;
        }
        continue;
      }
      ssize_t r = ::recv(fd.get(), buf.data(), buf.size(), 0);
      if (r > 0) {
        got.append(buf.data(), static_cast<size_t>(r));
      } else if (r == 0) {
        err = "EOF";
        break;
      } else if (errno != EAGAIN && errno != EINTR) {
        err = errno_name(errno);
        break;
      }
    }
    if (interrupted) break;
    ++attempts;
    if (err.empty() && got != line) err = "MISMATCH";
    if (!err.empty()) {
      ++errors[err];
      ++failed_stage["echo"];
      continue;
    }
    ++ok;
  }
  emit({{"cmd", "tcp"},
        {"dst", o.dst},
        {"attempts", attempts},
        {"ok", ok},
        {"errors", errors},
        {"failed_stage", failed_stage},
        {"connect_ms_max", cms_max},
        {"connect_ms_min", measured ? cms_min : 0.0},
        {"connect_ms_avg", measured ? cms_sum / static_cast<double>(measured) : 0.0},
        {"duration_ms", ms_since(start)},
        {"interrupted", stopping()}});
  return 0;
}

// ---------------------------------------------------------------------------------------------
// connect-time

struct ConnectTimeOpts {
  std::string dst;
  bool udp = false;
  double timeout_ms = 3000;
  ClientOpts client;
};

int run_connect_time(const ConnectTimeOpts& o) {
  Endpoint dst = parse_endpoint(o.dst);
  std::string stage;
  int raw = make_socket(dst.family, o.udp ? SOCK_DGRAM : SOCK_STREAM, o.client, &stage);
  json j = {{"cmd", "connect-time"}, {"dst", o.dst}, {"proto", o.udp ? "udp" : "tcp"}};
  if (raw < 0) {
    // The socket could not even be set up (e.g. --bind-dev of a missing interface): that is
    // a measured outcome too, reported with the stage that failed.
    j["errno"] = errno_name(-raw);
    j["ms"] = 0.0;
    j["stage"] = stage;
    emit(j);
    return 0;
  }
  ks::UniqueFd fd(raw);
  ConnectResult c = timed_connect(fd.get(), dst, o.timeout_ms);
  j["errno"] = c.interrupted ? "EINTR" : errno_name(c.err);
  j["ms"] = c.ms;
  j["stage"] = "connect";
  emit(j);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// uring: sends that never pass through the send()/connect() system calls

struct UringOpts {
  std::string dst;
  uint64_t count = 5;
  bool tcp = false;
  ClientOpts client;
};

// Submits one prepared SQE and returns its result (>= 0, or -errno).
int uring_one(io_uring* ring, const std::function<void(io_uring_sqe*)>& prepare) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (!sqe) setup_fail("io_uring_get_sqe", EBUSY);
  prepare(sqe);
  if (int r = io_uring_submit(ring); r < 0) setup_fail("io_uring_submit", -r);
  io_uring_cqe* cqe = nullptr;
  if (int r = io_uring_wait_cqe(ring, &cqe); r < 0) setup_fail("io_uring_wait_cqe", -r);
  int res = cqe->res;
  io_uring_cqe_seen(ring, cqe);
  return res;
}

int run_uring(const UringOpts& o) {
  Endpoint dst = parse_endpoint(o.dst);
  io_uring ring{};
  if (int r = io_uring_queue_init(8, &ring, 0); r < 0) setup_fail("io_uring_queue_init", -r);
  std::string stage;
  int raw = make_socket(dst.family, o.tcp ? SOCK_STREAM : SOCK_DGRAM, o.client, &stage);
  if (raw < 0) {
    io_uring_queue_exit(&ring);
    setup_fail(stage, -raw);
  }
  ks::UniqueFd fd(raw);
  // Blocking semantics for io_uring (it handles readiness itself).
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  Counters errors;
  uint64_t sent = 0;
  char payload[32] = "ks-probe uring";
  if (o.tcp) {
    int r = uring_one(&ring, [&](io_uring_sqe* sqe) {
      io_uring_prep_connect(sqe, fd.get(), reinterpret_cast<const sockaddr*>(&dst.ss), dst.len);
    });
    if (r < 0) errors[errno_name(-r)]++;
  }
  for (uint64_t i = 0; i < o.count && errors.empty(); i++) {
    int r;
    if (o.tcp) {
      r = uring_one(&ring, [&](io_uring_sqe* sqe) {
        io_uring_prep_send(sqe, fd.get(), payload, sizeof(payload), MSG_NOSIGNAL);
      });
    } else {
      iovec iov{payload, sizeof(payload)};
      msghdr msg{};
      msg.msg_name = const_cast<sockaddr_storage*>(&dst.ss);
      msg.msg_namelen = dst.len;
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      r = uring_one(&ring,
                    [&](io_uring_sqe* sqe) { io_uring_prep_sendmsg(sqe, fd.get(), &msg, 0); });
    }
    if (r < 0)
      errors[errno_name(-r)]++;
    else
      sent++;
  }
  io_uring_queue_exit(&ring);
  // Echoes: UDP one per datagram, TCP a byte stream of the same total length.
  uint64_t replies = 0, received = 0, want = sent * sizeof(payload);
  auto end = Clock::now() + std::chrono::milliseconds(1000);
  while (sent > 0 && received < want && Clock::now() < end) {
    pollfd pfd{fd.get(), POLLIN, 0};
    if (::poll(&pfd, 1, 50) <= 0) continue;
    char buf[2048];
    ssize_t n = ::recv(fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) break;
    received += o.tcp ? static_cast<uint64_t>(n) : sizeof(payload);
    if (!o.tcp) replies++;
  }
  if (o.tcp) replies = received / sizeof(payload);
  json j = {{"cmd", "uring"}, {"dst", o.dst},       {"proto", o.tcp ? "tcp" : "udp"},
            {"sent", sent},   {"replies", replies}, {"errors", errors}};
  emit(j);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// echo-server

struct EchoOpts {
  std::vector<std::string> tcp;
  std::vector<std::string> udp;
  std::string ready_file;
};

ks::UniqueFd bound_socket(const Endpoint& ep, int type) {
  ks::UniqueFd fd(::socket(ep.family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) setup_fail("socket for " + ep.text);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ep.family == AF_INET6) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  // UDP on a wildcard address must answer from the address the datagram was sent to.
  if (type == SOCK_DGRAM) {
    if (ep.family == AF_INET)
      ::setsockopt(fd.get(), IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
    else
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
  }
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&ep.ss), ep.len) != 0)
    setup_fail("bind " + ep.text);
  if (type == SOCK_STREAM && ::listen(fd.get(), 128) != 0) setup_fail("listen " + ep.text);
  return fd;
}

uint64_t udp_send_errors = 0;
uint64_t last_datagram_size = 0;

// Receives one datagram and sends it back to its sender, from the address it was sent to
// (IP_PKTINFO / IPV6_PKTINFO), so a wildcard-bound server answers correctly whichever of the
// namespace's addresses the client used. Returns false when nothing is queued.
bool echo_datagram(int fd, std::vector<char>& buf) {
  sockaddr_storage from{};
  iovec iov{buf.data(), buf.size()};
  alignas(cmsghdr) char control[256];
  msghdr msg{};
  msg.msg_name = &from;
  msg.msg_namelen = sizeof from;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = ::recvmsg(fd, &msg, 0);
  if (n < 0) return false;
  last_datagram_size = static_cast<uint64_t>(n);

  alignas(cmsghdr) char reply_control[256] = {};
  msghdr reply{};
  iovec riov{buf.data(), static_cast<size_t>(n)};
  reply.msg_name = &from;
  reply.msg_namelen = msg.msg_namelen;
  reply.msg_iov = &riov;
  reply.msg_iovlen = 1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      in_pktinfo in{};
      std::memcpy(&in, CMSG_DATA(c), sizeof in);
      in_pktinfo out{};
      out.ipi_spec_dst = in.ipi_addr;
      reply.msg_control = reply_control;
      reply.msg_controllen = CMSG_SPACE(sizeof out);
      cmsghdr* rc = CMSG_FIRSTHDR(&reply);
      rc->cmsg_level = IPPROTO_IP;
      rc->cmsg_type = IP_PKTINFO;
      rc->cmsg_len = CMSG_LEN(sizeof out);
      std::memcpy(CMSG_DATA(rc), &out, sizeof out);
    } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      in6_pktinfo in{};
      std::memcpy(&in, CMSG_DATA(c), sizeof in);
      in6_pktinfo out{};
      out.ipi6_addr = in.ipi6_addr;
      reply.msg_control = reply_control;
      reply.msg_controllen = CMSG_SPACE(sizeof out);
      cmsghdr* rc = CMSG_FIRSTHDR(&reply);
      rc->cmsg_level = IPPROTO_IPV6;
      rc->cmsg_type = IPV6_PKTINFO;
      rc->cmsg_len = CMSG_LEN(sizeof out);
      std::memcpy(CMSG_DATA(rc), &out, sizeof out);
    }
  }
  if (::sendmsg(fd, &reply, 0) < 0) ++udp_send_errors;
  return true;
}

struct Conn {
  ks::UniqueFd fd;
  std::string out;
  bool closing = false;
};

int run_echo_server(const EchoOpts& o) {
  if (o.tcp.empty() && o.udp.empty()) throw ks::Error("echo-server: need --tcp and/or --udp");
  std::vector<ks::UniqueFd> listeners, udps;
  for (const auto& s : o.tcp) listeners.push_back(bound_socket(parse_endpoint(s), SOCK_STREAM));
  for (const auto& s : o.udp) udps.push_back(bound_socket(parse_endpoint(s), SOCK_DGRAM));
  write_ready_file(o.ready_file);

  uint64_t tcp_accepted = 0, tcp_bytes = 0, udp_datagrams = 0, udp_bytes = 0;
  std::list<Conn> conns;
  std::vector<char> buf(65536);
  const auto start = Clock::now();

  while (!stopping()) {
    std::vector<pollfd> fds;
    for (auto& l : listeners) fds.push_back({l.get(), POLLIN, 0});
    for (auto& u : udps) fds.push_back({u.get(), POLLIN, 0});
    for (auto& c : conns)
      fds.push_back({c.fd.get(), static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
    if (wait_fds(fds, -1) == 0) continue;

    size_t i = 0;
    for (auto& l : listeners) {
      if (fds[i++].revents & POLLIN) {
        for (;;) {
          int c = ::accept4(l.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          ++tcp_accepted;
          conns.push_back(Conn{ks::UniqueFd(c), {}, false});
        }
      }
    }
    for (auto& u : udps) {
      if (fds[i++].revents & POLLIN) {
        for (;;) {
          if (!echo_datagram(u.get(), buf)) break;
          ++udp_datagrams;
          udp_bytes += last_datagram_size;
        }
      }
    }
    // Connections accepted above are not in fds yet: only walk the first ones.
    size_t polled = fds.size() - i;
    auto it = conns.begin();
    for (size_t k = 0; k < polled && it != conns.end(); ++k, ++i) {
      Conn& c = *it;
      short re = fds[i].revents;
      if (re & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t n = ::recv(c.fd.get(), buf.data(), buf.size(), 0);
        if (n > 0) {
          tcp_bytes += static_cast<uint64_t>(n);
          c.out.append(buf.data(), static_cast<size_t>(n));
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          c.closing = true;
        }
      }
      if (!c.out.empty()) {
        ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n > 0)
          c.out.erase(0, static_cast<size_t>(n));
        else if (n < 0 && errno != EAGAIN && errno != EINTR)
          c.closing = true, c.out.clear();
      }
      if (c.closing && c.out.empty())
        it = conns.erase(it);
      else
        ++it;
    }
  }
  emit({{"cmd", "echo-server"},
        {"tcp_accepted", tcp_accepted},
        {"tcp_bytes", tcp_bytes},
        {"udp_datagrams", udp_datagrams},
        {"udp_bytes", udp_bytes},
        {"udp_send_errors", udp_send_errors},
        {"open_connections", conns.size()},
        {"duration_ms", ms_since(start)}});
  return 0;
}

// ---------------------------------------------------------------------------------------------
// json-get: lets lab scripts read probe summaries without jq. Reads stdin, uses its last
// non-empty line, prints the value at the pointer (strings raw, everything else as JSON).

int json_get(std::string pointer, const std::optional<std::string>& missing_default) {
  std::string line, last;
  while (std::getline(std::cin, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  if (!pointer.empty() && pointer.front() != '/') pointer.insert(0, "/");
  try {
    json j = json::parse(last);
    json::json_pointer ptr(pointer);
    if (!j.contains(ptr)) {
      if (missing_default) {
        std::cout << *missing_default << "\n";
        return 0;
      }
      std::cerr << "ks-probe json-get: no " << pointer << " in " << last << "\n";
      return 1;
    }
    const json& v = j.at(ptr);
    std::cout << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "ks-probe json-get: " << e.what() << " (input: '" << last << "')\n";
    return 1;
  }
}

// seqpacket-call PATH: send stdin as one raw message to a SOCK_SEQPACKET unix socket (the
// ksd admin socket) and print the reply — for feeding the daemon garbage on purpose.
int seqpacket_call(const std::string& path) {
  std::string message((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  try {
    ks::UniqueFd fd = ks::ipc::connect_to(path);
    if (::send(fd.get(), message.data(), message.size(), MSG_NOSIGNAL) < 0) {
      std::cerr << "ks-probe seqpacket-call: send: " << std::strerror(errno) << "\n";
      return 1;
    }
    std::cout << ks::ipc::receive_message(fd.get(), 5000).dump() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "ks-probe seqpacket-call: " << e.what() << "\n";
    return 1;
  }
}

int prog_query(const std::string& cgroup, unsigned attach_type, bool effective) {
  try {
    ks::UniqueFd fd = ks::open_cgroup(cgroup);
    std::vector<uint32_t> ids(64);
    auto count = static_cast<__u32>(ids.size());
    __u32 flags = 0;
    if (bpf_prog_query(fd.get(), static_cast<bpf_attach_type>(attach_type),
                       effective ? BPF_F_QUERY_EFFECTIVE : 0, &flags, ids.data(), &count) != 0)
      throw ks::Error(std::string("BPF_PROG_QUERY: ") + std::strerror(errno));
    ids.resize(count);
    emit({{"cmd", "prog-query"}, {"ids", ids}});
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "ks-probe prog-query: " << e.what() << "\n";
    return 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Pacing: with the default 50 us timer slack, every wait of a sender paced at tens of
  // microseconds (the flap storm's 10,000+ packets per second) would stretch by that much.
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  CLI::App app{"ks-probe: network probes for the Killswitch leak lab"};
  app.require_subcommand(1);

  EchoOpts echo;
  auto* echo_cmd = app.add_subcommand("echo-server", "echo TCP and UDP until SIGTERM/SIGINT");
  echo_cmd->add_option("--tcp", echo.tcp, "listen on IP:PORT (repeatable)");
  echo_cmd->add_option("--udp", echo.udp, "receive on IP:PORT (repeatable)");
  echo_cmd->add_option("--ready-file", echo.ready_file, "create this file once listening");

  UdpOpts udp;
  auto* udp_cmd = app.add_subcommand("udp", "sendto() a destination in a loop");
  udp_cmd->add_option("--dst", udp.dst, "destination IP:PORT")->required();
  udp.pacing.add(udp_cmd);
  udp_cmd->add_flag("--expect-reply", udp.expect_reply,
                    "after the last send, wait up to --reply-wait-ms for missing replies");
  udp_cmd->add_option("--reply-wait-ms", udp.reply_wait_ms, "default 1000");
  udp_cmd->add_option("--size", udp.size, "payload bytes (default 32)");
  udp_cmd->add_option("--ready-file", udp.ready_file, "create this file once the socket is set up");
  add_client_opts(udp_cmd, udp.client);

  TcpOpts tcp;
  auto* tcp_cmd = app.add_subcommand("tcp", "connect/send/echo attempts, a new socket each");
  tcp_cmd->add_option("--dst", tcp.dst, "destination IP:PORT")->required();
  tcp.pacing.add(tcp_cmd);
  tcp_cmd->add_option("--timeout-ms", tcp.timeout_ms,
                      "connect timeout and echo timeout, each (default 1000)");
  tcp_cmd->add_option("--ready-file", tcp.ready_file, "create this file when the loop starts");
  add_client_opts(tcp_cmd, tcp.client);

  ConnectTimeOpts ct;
  auto* ct_cmd = app.add_subcommand("connect-time", "one connect(): its errno and latency");
  ct_cmd->add_option("--dst", ct.dst, "destination IP:PORT")->required();
  ct_cmd->add_flag("--udp", ct.udp, "UDP socket (connect only routes) instead of TCP");
  ct_cmd->add_option("--timeout-ms", ct.timeout_ms, "TCP connect timeout (default 3000)");
  add_client_opts(ct_cmd, ct.client);

  UringOpts uring;
  auto* uring_cmd = app.add_subcommand("uring", "UDP sendmsg or TCP connect+send via io_uring");
  uring_cmd->add_option("--dst", uring.dst, "destination IP:PORT")->required();
  uring_cmd->add_option("--count", uring.count, "number of sends (default 5)");
  uring_cmd->add_flag("--tcp", uring.tcp, "IORING_OP_CONNECT + IORING_OP_SEND instead of UDP");
  add_client_opts(uring_cmd, uring.client);

  std::string query_cgroup;
  unsigned query_type = 0;
  bool query_effective = false;
  auto* pq_cmd = app.add_subcommand("prog-query", "BPF_PROG_QUERY of one hook on a cgroup");
  pq_cmd->add_option("cgroup", query_cgroup, "cgroup directory")->required();
  pq_cmd->add_option("attach_type", query_type, "attach type number")->required();
  pq_cmd->add_flag("--effective", query_effective, "effective programs (inherited too)");

  std::string pointer;
  std::optional<std::string> missing_default;
  auto* jg_cmd = app.add_subcommand(
      "json-get", "script helper (not a probe): print one value of the JSON line read from stdin");
  jg_cmd->add_option("pointer", pointer, "JSON pointer, e.g. /sent or /errors/EPERM")->required();
  jg_cmd->add_option("--default", missing_default, "print this when the value is missing");

  std::string socket_path;
  auto* sp_cmd = app.add_subcommand(
      "seqpacket-call", "script helper: send stdin as one message to a seqpacket socket");
  sp_cmd->add_option("path", socket_path, "socket path")->required();

  CLI11_PARSE(app, argc, argv);
  if (*jg_cmd) return json_get(pointer, missing_default);
  if (*sp_cmd) return seqpacket_call(socket_path);
  if (*pq_cmd) return prog_query(query_cgroup, query_type, query_effective);
  setup_signals();

  std::string cmd = app.get_subcommands().front()->get_name();
  try {
    if (*echo_cmd) return run_echo_server(echo);
    if (*udp_cmd) return run_udp(udp);
    if (*tcp_cmd) return run_tcp(tcp);
    if (*ct_cmd) return run_connect_time(ct);
    if (*uring_cmd) return run_uring(uring);
  } catch (const SetupError& e) {
    emit({{"cmd", cmd}, {"error", e.what}, {"errno", errno_name(e.err)}});
    return 2;
  } catch (const std::exception& e) {
    emit({{"cmd", cmd}, {"error", e.what()}});
    return 2;
  }
  return 2;
}
