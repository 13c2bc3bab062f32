// ksctl metrics: ksd's status and list as OpenMetrics text, on stdout or (--http) as the
// answer to one HTTP request read from stdin: systemd's killswitch-metrics.socket
// (Accept=yes) hands each connection to a killswitch-metrics@.service instance this way.
#include "killswitch/metrics.hpp"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <string>

#include "commands.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/error.hpp"
#include "killswitch/ipc.hpp"

namespace ksctl {
namespace {

namespace metrics = ks::metrics;

struct Collected {
  metrics::Snapshot snapshot;
  std::string down;  // why ksd gave no usable answer; empty when it did
};

Collected collect(const MetricsOptions& o) {
  Collected c;
  try {
    const nlohmann::json status = ks::ipc::call(o.socket_path, {{"op", "status"}}, o.timeout_ms);
    if (!status.value("ok", false)) throw ks::Error(status.value("error", std::string("failed")));
    const nlohmann::json list = ks::ipc::call(o.socket_path, {{"op", "list"}}, o.timeout_ms);
    if (!list.value("ok", false)) throw ks::Error(list.value("error", std::string("failed")));
    c.snapshot = metrics::from_replies(status, list);
    return c;
  } catch (const ks::Error& e) {
    c.down = e.what();
  }
  // What is knowable without ksd: are the programs still pinned? Only when the pin
  // directory can be looked at (bpffs is root-only, normally): else nothing is said,
  // rather than a 0 that would read as "not pinned".
  const std::string parent = std::filesystem::path(o.pin_dir).parent_path().string();
  c.snapshot = metrics::Snapshot{};
  if (::access(parent.empty() ? "." : parent.c_str(), X_OK) == 0)
    c.snapshot.pinned = ks::Enforcement::pins_present(o.pin_dir);
  return c;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Reads one request's head from stdin: at most kMaxHttpRequestBytes, within timeout_ms in
// all (a client that sends nothing, or a byte a second, gets 408 and the connection ends).
metrics::HttpRequest read_request(int timeout_ms) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string received;
  char buf[2048];
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return metrics::http_error(408, "no complete request in time");
    pollfd p{STDIN_FILENO, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return metrics::http_error(400, "cannot read the request");
    if (ready == 0) continue;  // (the deadline is checked above)
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return metrics::http_error(400, "the request ended early");
    received.append(buf, static_cast<std::size_t>(n));
    const std::size_t end = metrics::http_head_end(received);
    if (end != std::string::npos) {
      if (end > metrics::kMaxHttpRequestBytes) break;
      return metrics::parse_http_request(std::string_view(received).substr(0, end));
    }
    if (received.size() > metrics::kMaxHttpRequestBytes) break;
  }
  return metrics::http_error(431, "request too large (at most " +
                                      std::to_string(metrics::kMaxHttpRequestBytes) + " bytes)");
}

}  // namespace

int metrics_command(const MetricsOptions& o) {
  if (!o.http) {
    const Collected c = collect(o);
    const std::string text = metrics::render(c.snapshot, o.format);
    if (!write_all(STDOUT_FILENO, text)) return kFailed;
    if (!c.down.empty()) {
      std::fprintf(stderr, "ksctl: %s\n", c.down.c_str());
      return kDaemonDown;
    }
    return kOk;
  }
  // The client may go away before the answer is written: EPIPE, not death by SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  metrics::HttpRequest request = read_request(o.timeout_ms);
  std::string body;
  if (request.status == 200) {
    // ksd down is an answer too (killswitch_daemon_up 0), not a failed scrape: Prometheus
    // then shows the daemon down rather than the endpoint.
    const Collected c = collect(o);
    if (!c.down.empty()) std::fprintf(stderr, "ksctl: %s\n", c.down.c_str());
    body = metrics::render(c.snapshot, request.format);
  } else {
    std::fprintf(stderr, "ksctl: metrics --http: %d %s\n", request.status, request.reason.c_str());
  }
  if (!write_all(STDOUT_FILENO, metrics::http_response(request, body))) return kFailed;
  return request.status == 200 ? kOk : kFailed;
}

}  // namespace ksctl
