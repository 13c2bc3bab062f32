#include "killswitch/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <set>
#include <utility>

#include "killswitch/error.hpp"
#include "killswitch/json_text.hpp"

namespace ks::metrics {
namespace {

enum class Type { kCounter, kGauge, kInfo, kStateset };

using Labels = std::vector<std::pair<std::string_view, std::string_view>>;

// What each counter field counts (the names are for_each_counter's).
const char* counter_help(std::string_view field) {
  if (field == "allowed_packets")
    return "Packets allowed (through a tunnel, loopback, allowed LANs)";
  if (field == "allowed_bytes") return "Bytes of the allowed packets";
  if (field == "blocked_packets") return "Packets dropped by the egress and ingress programs";
  if (field == "blocked_bytes") return "Bytes of the dropped packets";
  if (field == "blocked_connects")
    return "Connects, sends and multicast joins refused by the socket hooks";
  if (field == "blocked")
    return "Blocked attempts: dropped packets plus refused connects and sends";
  if (field == "events_dropped") return "Blocked attempts without an event (rate limit, ring full)";
  return "Killswitch counter";
}

// One family at a time: its metadata, then its samples (OpenMetrics forbids interleaving).
class Writer {
 public:
  Writer(std::string& out, Format format) : out_(out), format_(format) {}

  // name: the family's name (for a counter without _total, for an info without _info).
  void family(std::string_view name, Type type, std::string_view help, std::string_view unit = {}) {
    name_ = name;
    type_ = type;
    const bool om = format_ == Format::kOpenMetrics;
    // Text 0.0.4 knows no info, stateset or unit, and names a counter's family as its samples.
    std::string meta(name);
    if (!om && type == Type::kCounter) meta += "_total";
    if (!om && type == Type::kInfo) meta += "_info";
    const char* type_word = "gauge";
    if (type == Type::kCounter) type_word = "counter";
    if (om && type == Type::kInfo) type_word = "info";
    if (om && type == Type::kStateset) type_word = "stateset";
    out_ += "# TYPE " + meta + " " + type_word + "\n";
    if (om && !unit.empty()) out_ += "# UNIT " + meta + " " + std::string(unit) + "\n";
    out_ += "# HELP " + meta + " " + escape_help(help) + "\n";
  }

  void sample(const Labels& labels, std::uint64_t value) {
    out_ += name_;
    if (type_ == Type::kCounter) out_ += "_total";
    if (type_ == Type::kInfo) out_ += "_info";
    if (!labels.empty()) {
      out_ += '{';
      bool first = true;
      for (const auto& [label, text] : labels) {
        if (!first) out_ += ',';
        first = false;
        out_ += label;
        out_ += "=\"";
        out_ += label_value(text);
        out_ += '"';
      }
      out_ += '}';
    }
    char buf[24];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
    (void)ec;  // 24 characters hold any 64-bit integer
    out_ += ' ';
    out_.append(buf, end);
    out_ += '\n';
  }
  void sample(std::uint64_t value) { sample({}, value); }

  void finish() {
    if (format_ == Format::kOpenMetrics) out_ += "# EOF\n";
  }

 private:
  // HELP text: backslash and newline escaped in both formats, double quotes in OpenMetrics.
  std::string escape_help(std::string_view text) const {
    std::string out;
    for (char c : valid_utf8(text)) {
      if (c == '\\')
        out += "\\\\";
      else if (c == '\n')
        out += "\\n";
      else if (c == '"' && format_ == Format::kOpenMetrics)
        out += "\\\"";
      else
        out += c;
    }
    return out;
  }

  std::string& out_;
  Format format_;
  std::string name_;
  Type type_ = Type::kGauge;
};

// Families of every counter field: killswitch_<prefix><field>, with the labels each
// subject has. Bytes have a unit (OpenMetrics: the family's name ends with it).
template <typename Subject, typename LabelsOf, typename CountersOf>
void counter_families(Writer& w, std::string_view prefix, std::string_view whose,
                      const std::vector<Subject>& subjects, LabelsOf labels_of,
                      CountersOf counters_of) {
  if (subjects.empty()) return;
  for_each_counter(Counters{}, [&](const char* field, std::uint64_t) {
    const std::string name = "killswitch_" + std::string(prefix) + metric_name(field);
    const std::string_view f(field);
    w.family(name, Type::kCounter, std::string(counter_help(field)) + std::string(whose),
             f.ends_with("_bytes") ? "bytes" : "");
    for (const Subject& s : subjects) {
      std::uint64_t value = 0;
      for_each_counter(counters_of(s), [&](const char* other, std::uint64_t v) {
        if (f == other) value = v;
      });
      w.sample(labels_of(s), value);
    }
  });
}

std::uint64_t number(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end()) return 0;
  if (!it->is_number_unsigned()) throw Error(std::string("\"") + key + "\" is not a count");
  return it->get<std::uint64_t>();
}

std::string text(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end()) return {};
  if (!it->is_string()) throw Error(std::string("\"") + key + "\" is not a string");
  return it->get<std::string>();
}

const nlohmann::json& object(const nlohmann::json& j, const char* key) {
  static const nlohmann::json kEmpty = nlohmann::json::object();
  const auto it = j.find(key);
  if (it == j.end()) return kEmpty;
  if (!it->is_object()) throw Error(std::string("\"") + key + "\" is not an object");
  return *it;
}

const nlohmann::json& array(const nlohmann::json& j, const char* key) {
  static const nlohmann::json kEmpty = nlohmann::json::array();
  const auto it = j.find(key);
  if (it == j.end()) return kEmpty;
  if (!it->is_array()) throw Error(std::string("\"") + key + "\" is not an array");
  return *it;
}

Counters counters(const nlohmann::json& j) {
  const nlohmann::json& c = object(j, "counters");
  Counters out;
  out.allowed_packets = number(c, "allowed_packets");
  out.allowed_bytes = number(c, "allowed_bytes");
  out.blocked_packets = number(c, "blocked_packets");
  out.blocked_bytes = number(c, "blocked_bytes");
  out.blocked_connects = number(c, "blocked_connects");
  out.events_dropped = number(c, "events_dropped");
  return out;
}

bool ascii_iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x | 0x20) == (y | 0x20);
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

const char* status_text(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 505:
      return "HTTP Version Not Supported";
  }
  return "Error";
}

}  // namespace

const char* content_type(Format format) {
  return format == Format::kOpenMetrics ? kOpenMetricsContentType : kPrometheusContentType;
}

std::string label_value(std::string_view text) {
  std::string out;
  const std::string valid = valid_utf8(text);
  out.reserve(valid.size());
  for (char ch : valid) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      // Allowed by OpenMetrics, but a carriage return or a NUL in a label confuses the
      // line-oriented tools that read this text, and means nothing in a name.
      out += "\xEF\xBF\xBD";
    } else {
      out += ch;
    }
  }
  return out;
}

std::string metric_name(std::string_view text) {
  std::string out;
  for (char c : text) {
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    out += letter || (digit && !out.empty()) ? c : '_';
  }
  return out.empty() ? "_" : out;
}

std::string app_name(std::string_view command) {
  const std::string_view first = command.substr(0, command.find(' '));
  const std::size_t slash = first.find_last_of('/');
  std::string_view name = slash == std::string_view::npos ? first : first.substr(slash + 1);
  // A label, not a record: names longer than a path component are cut (at a UTF-8 boundary).
  constexpr std::size_t kMax = 255;
  if (name.size() > kMax) {
    std::size_t end = kMax;
    while (end > 0 && (static_cast<unsigned char>(name[end]) & 0xC0) == 0x80) --end;
    name = name.substr(0, end);
  }
  return std::string(name);
}

Snapshot from_replies(const nlohmann::json& status, const nlohmann::json& list) {
  if (!status.is_object() || !list.is_object()) throw Error("ksd's reply is not a JSON object");
  Snapshot s;
  s.daemon_up = true;
  const nlohmann::json& programs = object(status, "programs");
  if (programs.contains("pinned")) s.pinned = programs.value("pinned", false);
  if (programs.contains("attached")) s.attached = programs.value("attached", false);
  s.version = text(status, "version");
  s.protected_apps = number(status, "protected_apps");
  s.totals = counters(status);
  for (const auto& [name, p] : object(status, "profiles").items()) {
    if (!p.is_object()) throw Error("profile \"" + name + "\" is not an object");
    Profile profile;
    profile.name = name;
    profile.through_tunnel = text(p, "traffic") == "through tunnel";
    for (const auto& t : array(p, "tunnels")) {
      if (!t.is_object()) throw Error("a tunnel of \"" + name + "\" is not an object");
      profile.tunnels.push_back({text(t, "name"), text(t, "state"), number(t, "ifindex")});
    }
    profile.counters = counters(p);
    s.profiles.push_back(std::move(profile));
  }
  for (const auto& a : array(list, "apps")) {
    if (!a.is_object()) throw Error("an app in the list is not an object");
    App app;
    app.cgroup = text(a, "cgroup");
    app.profile = text(a, "profile");
    app.command = text(a, "command");
    for (const auto& pid : array(a, "pids")) {
      if (!pid.is_number_integer()) throw Error("a pid in the list is not a number");
      app.pids.push_back(pid.get<std::int64_t>());
    }
    app.counters = counters(a);
    s.apps.push_back(std::move(app));
  }
  return s;
}

std::string render(const Snapshot& s, Format format) {
  std::string out;
  out.reserve(1024 + s.apps.size() * 1024);
  Writer w(out, format);
  w.family("killswitch_daemon_up", Type::kGauge,
           "1 when ksd answers on its admin socket (enforcement stays pinned without it)");
  w.sample(s.daemon_up ? 1 : 0);
  if (s.pinned) {
    w.family("killswitch_programs_pinned", Type::kGauge,
             "1 when the kill switch programs are pinned (they enforce without ksd)");
    w.sample(*s.pinned ? 1 : 0);
  }
  if (!s.daemon_up) {
    w.finish();
    return out;
  }
  if (s.attached) {
    w.family("killswitch_programs_attached", Type::kGauge,
             "1 when every program is in force on the protected tree");
    w.sample(*s.attached ? 1 : 0);
  }
  w.family("killswitch_build", Type::kInfo, "The version of ksd");
  w.sample({{"version", s.version}}, 1);
  w.family("killswitch_protected_apps", Type::kGauge, "Protected apps with processes");
  w.sample(s.protected_apps);

  struct Total {  // (the totals have no labels: one subject)
    const Counters* c;
  };
  const std::vector<Total> totals{{&s.totals}};
  counter_families(
      w, "", ", all profiles", totals, [](const Total&) { return Labels{}; },
      [](const Total& t) { return *t.c; });

  if (!s.profiles.empty()) {
    w.family("killswitch_profile_through_tunnel", Type::kGauge,
             "1 when one of the profile's tunnels is up (else its traffic is blocked)");
    for (const Profile& p : s.profiles) w.sample({{"profile", p.name}}, p.through_tunnel ? 1 : 0);
  }
  // A tunnel named twice in a profile would be the same series twice: once.
  std::vector<std::pair<const Profile*, const Tunnel*>> tunnels;
  for (const Profile& p : s.profiles) {
    std::set<std::string_view> seen;
    for (const Tunnel& t : p.tunnels)
      if (seen.insert(t.name).second) tunnels.emplace_back(&p, &t);
  }
  if (!tunnels.empty()) {
    w.family("killswitch_tunnel_up", Type::kGauge, "1 when the tunnel is up");
    for (const auto& [p, t] : tunnels)
      w.sample({{"profile", p->name}, {"tunnel", t->name}}, t->state == "up" ? 1 : 0);
    w.family("killswitch_tunnel_ifindex", Type::kGauge,
             "The tunnel's interface index (0 when it is missing)");
    for (const auto& [p, t] : tunnels)
      w.sample({{"profile", p->name}, {"tunnel", t->name}}, t->ifindex);
    w.family("killswitch_tunnel_state", Type::kStateset, "The tunnel's state as ksd sees it");
    for (const auto& [p, t] : tunnels)
      for (const char* state : {"up", "down", "missing"})
        w.sample({{"profile", p->name}, {"tunnel", t->name}, {"killswitch_tunnel_state", state}},
                 t->state == state ? 1 : 0);
  }
  counter_families(
      w, "profile_", ", per profile", s.profiles,
      [](const Profile& p) {
        return Labels{{"profile", p.name}};
      },
      [](const Profile& p) { return p.counters; });

  if (!s.apps.empty()) {
    // The pids and names as `ksctl list` has them; one series per app (its cgroup).
    std::vector<std::string> pids, names;
    for (const App& a : s.apps) {
      pids.push_back(a.pids.empty() ? std::string() : std::to_string(a.pids.front()));
      names.push_back(app_name(a.command));
    }
    w.family("killswitch_app", Type::kInfo,
             "A protected app: its cgroup, profile, first process and command's name");
    for (std::size_t i = 0; i < s.apps.size(); ++i) {
      const App& a = s.apps[i];
      w.sample({{"app", a.cgroup}, {"profile", a.profile}, {"pid", pids[i]}, {"name", names[i]}},
               1);
    }
    w.family("killswitch_app_processes", Type::kGauge, "Processes in the protected app");
    for (const App& a : s.apps)
      w.sample({{"app", a.cgroup}, {"profile", a.profile}}, a.pids.size());
  }
  counter_families(
      w, "app_", ", per protected app", s.apps,
      [](const App& a) {
        return Labels{{"app", a.cgroup}, {"profile", a.profile}};
      },
      [](const App& a) { return a.counters; });
  w.finish();
  return out;
}

// ---- HTTP ----

std::size_t http_head_end(std::string_view received) {
  // A blank line ends the head; clients that send bare newlines are accepted too.
  for (std::size_t i = 0; i < received.size(); ++i) {
    if (received[i] != '\n') continue;
    if (i + 1 < received.size() && received[i + 1] == '\n') return i + 2;
    if (i + 2 < received.size() && received[i + 1] == '\r' && received[i + 2] == '\n') return i + 3;
  }
  return std::string_view::npos;
}

HttpRequest http_error(int status, std::string reason) {
  HttpRequest r;
  r.status = status;
  r.reason = std::move(reason);
  return r;
}

HttpRequest parse_http_request(std::string_view head) {
  if (head.size() > kMaxHttpRequestBytes) return http_error(431, "request too large");
  std::vector<std::string_view> lines;
  while (!head.empty()) {
    const std::size_t nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;  // the blank line: the head ends
    lines.push_back(line);
    if (nl == std::string_view::npos) break;
    head.remove_prefix(nl + 1);
  }
  if (lines.empty()) return http_error(400, "no request line");
  // METHOD SP TARGET SP HTTP/1.x
  const std::string_view request_line = lines.front();
  const std::size_t sp1 = request_line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : request_line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || request_line.find(' ', sp2 + 1) != std::string_view::npos)
    return http_error(400, "malformed request line");
  const std::string_view method = request_line.substr(0, sp1);
  const std::string_view target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = request_line.substr(sp2 + 1);
  if (!version.starts_with("HTTP/")) return http_error(400, "malformed request line");
  if (version != "HTTP/1.0" && version != "HTTP/1.1")
    return http_error(505, "only HTTP/1.0 and HTTP/1.1");
  for (char c : method)
    if (c < 'A' || c > 'Z') return http_error(400, "malformed method");
  if (target.empty() || target.front() != '/') return http_error(400, "malformed target");

  HttpRequest r;
  r.status = 200;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const std::size_t colon = lines[i].find(':');
    if (colon == std::string_view::npos || colon == 0) return http_error(400, "malformed header");
    if (!ascii_iequal(lines[i].substr(0, colon), "accept")) continue;
    const std::string_view accept = trim(lines[i].substr(colon + 1));
    // Not a full negotiation (q-values are ignored): OpenMetrics for whoever names it or
    // names neither; the older text for a client that asks for text/plain alone.
    if (accept.find("application/openmetrics-text") == std::string_view::npos &&
        accept.find("text/plain") != std::string_view::npos)
      r.format = Format::kPrometheus;
  }
  if (method != "GET" && method != "HEAD") return http_error(405, "only GET and HEAD");
  r.head = method == "HEAD";
  if (target.substr(0, target.find('?')) != "/metrics") {
    HttpRequest e = http_error(404, "not found: the metrics are at /metrics");
    e.head = r.head;
    return e;
  }
  return r;
}

std::string http_response(const HttpRequest& request, std::string_view body) {
  std::string error_body;
  if (request.status != 200) {
    error_body = request.reason + "\n";
    body = error_body;
  }
  std::string out =
      "HTTP/1.0 " + std::to_string(request.status) + " " + status_text(request.status) + "\r\n";
  out += std::string("Content-Type: ") +
         (request.status == 200 ? content_type(request.format) : "text/plain; charset=utf-8") +
         "\r\n";
  if (request.status == 405) out += "Allow: GET, HEAD\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += "Connection: close\r\n\r\n";
  if (!request.head) out += body;
  return out;
}

}  // namespace ks::metrics
