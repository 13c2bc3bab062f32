// Metrics for Prometheus: what `ksctl status` and `ksctl list` report, as OpenMetrics text
// (or the older Prometheus text format 0.0.4), for `ksctl metrics` and its socket-activated
// HTTP endpoint (docs/interface.md). Pure: a Snapshot is made from ksd's replies and
// rendered to text here, so that tests and fuzzers reach all of it without a daemon.
//
// Label values come from names a local user chooses (an app's command, its cgroup's name):
// they are escaped here (backslash, double quote, newline) and made valid UTF-8, so that no
// name can end a label, a line or a sample early.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "killswitch/counters.hpp"

namespace ks::metrics {

enum class Format {
  kOpenMetrics,  // OpenMetrics 1.0.0: counters' families without _total, # UNIT, # EOF
  kPrometheus,   // text format 0.0.4: what `promtool check metrics` lints
};

inline constexpr const char* kOpenMetricsContentType =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";
const char* content_type(Format format);

struct Tunnel {
  std::string name;
  std::string state;  // up, down, missing
  std::uint64_t ifindex = 0;
};

struct Profile {
  std::string name;
  bool through_tunnel = false;  // a tunnel of the profile is up
  std::vector<Tunnel> tunnels;
  Counters counters;
};

struct App {
  std::string cgroup;   // as `ksctl list` shows it: the path below the cgroup2 mount
  std::string profile;  // "(none: blocked)" for a cgroup without one
  std::vector<std::int64_t> pids;
  std::string command;
  Counters counters;
};

struct Snapshot {
  bool daemon_up = false;
  std::optional<bool> pinned;    // unknown when the pin directory cannot be looked at
  std::optional<bool> attached;  // only ksd knows
  std::string version;           // ksd's; empty when it is down
  std::uint64_t protected_apps = 0;
  Counters totals;
  std::vector<Profile> profiles;
  std::vector<App> apps;
};

// From ksd's replies to {"op":"status"} and {"op":"list"} (docs/interface.md). Throws
// ks::Error for a reply without the documented shape.
Snapshot from_replies(const nlohmann::json& status, const nlohmann::json& list);

// The whole exposition; in OpenMetrics ending with "# EOF\n".
std::string render(const Snapshot& snapshot, Format format);

// A label's value as it goes between the quotes: valid UTF-8 (invalid bytes become U+FFFD),
// `\` `"` and newline escaped, other control characters U+FFFD.
std::string label_value(std::string_view text);
// A metric or label name from any text: [a-zA-Z_:][a-zA-Z0-9_:]*, other characters '_'.
std::string metric_name(std::string_view text);
// An app's name for its label: the last path component of its command's first word.
std::string app_name(std::string_view command);

// ---- the HTTP endpoint: one request, one answer (HTTP/1.0, the connection then closes) ----

inline constexpr std::size_t kMaxHttpRequestBytes = 8192;

struct HttpRequest {
  int status = 400;  // 200, or the error to answer with
  std::string reason;
  bool head = false;  // HEAD: headers only
  Format format = Format::kOpenMetrics;
};

// Where the request's head ends (after its blank line), or npos while it has not ended.
std::size_t http_head_end(std::string_view received);
// Judges a request's head (request line and headers): GET or HEAD of /metrics (405, 404
// otherwise, 400 for anything malformed). OpenMetrics unless the Accept header asks for
// text/plain and not for application/openmetrics-text.
HttpRequest parse_http_request(std::string_view head);
// The whole answer: status line, headers, and (unless HEAD) the body. For an error, `body`
// is ignored and the reason is the body.
std::string http_response(const HttpRequest& request, std::string_view body);
// An error answer alone (timeout 408, request too large 431, ...).
HttpRequest http_error(int status, std::string reason);

}  // namespace ks::metrics
