#include "killswitch/metrics.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "killswitch/error.hpp"

namespace {

namespace m = ks::metrics;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

bool has_line(const std::string& text, const std::string& line) {
  for (const auto& l : lines_of(text))
    if (l == line) return true;
  return false;
}

// A status and a list as ksd writes them (docs/interface.md), trimmed to what is read.
const char* kStatus = R"({"ok":true,"daemon":"running","version":"1.2.3","pid":42,
  "programs":{"pinned":true,"attached":true},
  "profiles":{"default":{"id":1,"tunnels":[{"name":"wg0","state":"up","ifindex":7,"ipv4":true,"ipv6":false}],
     "traffic":"through tunnel","counters":{"allowed_packets":5,"allowed_bytes":500,"blocked_packets":1,
     "blocked_bytes":60,"blocked_connects":2,"blocked":3,"events_dropped":0}},
   "work":{"id":2,"tunnels":[{"name":"wg1","state":"missing","ifindex":0},{"name":"wg2","state":"down","ifindex":9}],
     "traffic":"blocked: wg1 missing, wg2 down","counters":{"allowed_packets":0,"allowed_bytes":0,
     "blocked_packets":0,"blocked_bytes":0,"blocked_connects":4,"blocked":4,"events_dropped":1}}},
  "protected_apps":1,"blocked_total":7,
  "counters":{"allowed_packets":5,"allowed_bytes":500,"blocked_packets":1,"blocked_bytes":60,
    "blocked_connects":6,"blocked":7,"events_dropped":1}})";
const char* kList = R"({"ok":true,"apps":[{"cgroup":"/ks.slice/ks-default.slice/ksrun-4242.scope",
  "cgroup_id":99,"profile":"default","pids":[4242,4250],"command":"/usr/bin/qbittorrent --x",
  "counters":{"allowed_packets":5,"allowed_bytes":500,"blocked_packets":1,"blocked_bytes":60,
  "blocked_connects":2,"blocked":3,"events_dropped":0}}]})";

m::Snapshot sample_snapshot() {
  return m::from_replies(nlohmann::json::parse(kStatus), nlohmann::json::parse(kList));
}

TEST(Metrics, LabelValuesEscapeBackslashQuoteAndNewline) {
  EXPECT_EQ(m::label_value("plain"), "plain");
  EXPECT_EQ(m::label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(m::label_value("\"}\n# EOF\n"), "\\\"}\\n# EOF\\n");
}

TEST(Metrics, LabelValuesAreValidUtf8WithoutControlCharacters) {
  EXPECT_EQ(m::label_value("caf\xC3\xA9"), "caf\xC3\xA9");
  EXPECT_EQ(m::label_value("a\xFF"
                           "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(m::label_value(std::string("a\0b\rc\x7f", 6)),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD"
            "c\xEF\xBF\xBD");
  EXPECT_EQ(m::label_value("\xE2\x82"), "\xEF\xBF\xBD");  // a cut-short sequence: one U+FFFD
}

TEST(Metrics, NamesAreSanitised) {
  EXPECT_EQ(m::metric_name("allowed_packets"), "allowed_packets");
  EXPECT_EQ(m::metric_name("a-b.c d"), "a_b_c_d");
  EXPECT_EQ(m::metric_name("9lives"), "_lives");
  EXPECT_EQ(m::metric_name("ns:x9"), "ns:x9");
  EXPECT_EQ(m::metric_name(""), "_");
}

TEST(Metrics, AppNameIsTheCommandsProgram) {
  EXPECT_EQ(m::app_name("/usr/bin/qbittorrent --profile x"), "qbittorrent");
  EXPECT_EQ(m::app_name("sleep 30"), "sleep");
  EXPECT_EQ(m::app_name(""), "");
  EXPECT_EQ(m::app_name(std::string(1000, 'x')).size(), 255u);
  // Cut at a UTF-8 boundary: 254 bytes and a two-byte character do not fit in 255.
  EXPECT_EQ(m::app_name(std::string(254, 'x') + "\xC3\xA9").size(), 254u);
}

TEST(Metrics, ReadsStatusAndList) {
  const m::Snapshot s = sample_snapshot();
  EXPECT_TRUE(s.daemon_up);
  EXPECT_EQ(s.version, "1.2.3");
  EXPECT_EQ(s.pinned, true);
  EXPECT_EQ(s.attached, true);
  EXPECT_EQ(s.protected_apps, 1u);
  EXPECT_EQ(s.totals.blocked(), 7u);
  ASSERT_EQ(s.profiles.size(), 2u);
  EXPECT_TRUE(s.profiles[0].through_tunnel);
  EXPECT_FALSE(s.profiles[1].through_tunnel);
  ASSERT_EQ(s.profiles[1].tunnels.size(), 2u);
  EXPECT_EQ(s.profiles[1].tunnels[1].ifindex, 9u);
  ASSERT_EQ(s.apps.size(), 1u);
  EXPECT_EQ(s.apps[0].pids, (std::vector<std::int64_t>{4242, 4250}));
  EXPECT_EQ(s.apps[0].counters.blocked_connects, 2u);
}

TEST(Metrics, RefusesRepliesOfTheWrongShape) {
  const auto list = nlohmann::json::parse(kList);
  EXPECT_THROW(m::from_replies(nlohmann::json::array(), list), ks::Error);
  EXPECT_THROW(
      m::from_replies(nlohmann::json::parse(R"({"counters":{"allowed_packets":-1}})"), list),
      ks::Error);
  EXPECT_THROW(m::from_replies(nlohmann::json::parse(R"({"profiles":[]})"), list), ks::Error);
  EXPECT_THROW(m::from_replies(nlohmann::json::object(),
                               nlohmann::json::parse(R"({"apps":[{"pids":["1"]}]})")),
               ks::Error);
}

TEST(Metrics, OpenMetricsHasTypesUnitsTotalsAndEof) {
  const std::string text = m::render(sample_snapshot(), m::Format::kOpenMetrics);
  const auto lines = lines_of(text);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), "# EOF");
  EXPECT_EQ(text.back(), '\n');
  EXPECT_TRUE(has_line(text, "killswitch_daemon_up 1"));
  EXPECT_TRUE(has_line(text, "killswitch_programs_pinned 1"));
  EXPECT_TRUE(has_line(text, "killswitch_programs_attached 1"));
  EXPECT_TRUE(has_line(text, "# TYPE killswitch_build info"));
  EXPECT_TRUE(has_line(text, "killswitch_build_info{version=\"1.2.3\"} 1"));
  EXPECT_TRUE(has_line(text, "killswitch_protected_apps 1"));
  // Counters: the family without _total, the samples with it; bytes have their unit.
  EXPECT_TRUE(has_line(text, "# TYPE killswitch_allowed_packets counter"));
  EXPECT_TRUE(has_line(text, "killswitch_allowed_packets_total 5"));
  EXPECT_TRUE(has_line(text, "# UNIT killswitch_allowed_bytes bytes"));
  EXPECT_TRUE(has_line(text, "killswitch_allowed_bytes_total 500"));
  EXPECT_TRUE(has_line(text, "killswitch_blocked_total 7"));  // = status's blocked_total
  EXPECT_TRUE(has_line(text, "killswitch_events_dropped_total 1"));
  EXPECT_TRUE(has_line(text, "killswitch_profile_blocked_connects_total{profile=\"work\"} 4"));
  EXPECT_TRUE(has_line(text, "killswitch_profile_through_tunnel{profile=\"default\"} 1"));
  EXPECT_TRUE(has_line(text, "killswitch_profile_through_tunnel{profile=\"work\"} 0"));
  // Tunnels: up, ifindex and a stateset.
  EXPECT_TRUE(has_line(text, "killswitch_tunnel_up{profile=\"default\",tunnel=\"wg0\"} 1"));
  EXPECT_TRUE(has_line(text, "killswitch_tunnel_up{profile=\"work\",tunnel=\"wg2\"} 0"));
  EXPECT_TRUE(has_line(text, "killswitch_tunnel_ifindex{profile=\"default\",tunnel=\"wg0\"} 7"));
  EXPECT_TRUE(has_line(text, "# TYPE killswitch_tunnel_state stateset"));
  EXPECT_TRUE(has_line(text,
                       "killswitch_tunnel_state{profile=\"work\",tunnel=\"wg1\","
                       "killswitch_tunnel_state=\"missing\"} 1"));
  EXPECT_TRUE(has_line(text,
                       "killswitch_tunnel_state{profile=\"work\",tunnel=\"wg1\","
                       "killswitch_tunnel_state=\"up\"} 0"));
  // Apps.
  const std::string app = "app=\"/ks.slice/ks-default.slice/ksrun-4242.scope\",profile=\"default\"";
  EXPECT_TRUE(
      has_line(text, "killswitch_app_info{" + app + ",pid=\"4242\",name=\"qbittorrent\"} 1"));
  EXPECT_TRUE(has_line(text, "killswitch_app_processes{" + app + "} 2"));
  EXPECT_TRUE(has_line(text, "killswitch_app_blocked_total{" + app + "} 3"));
  EXPECT_TRUE(has_line(text, "killswitch_app_allowed_bytes_total{" + app + "} 500"));
  // Every family once, its metadata before its samples; no blank lines.
  std::vector<std::string> families;
  for (const auto& l : lines) {
    EXPECT_FALSE(l.empty());
    if (l.starts_with("# TYPE ")) {
      const std::string name = l.substr(7, l.find(' ', 7) - 7);
      EXPECT_EQ(std::count(families.begin(), families.end(), name), 0) << name;
      families.push_back(name);
    } else if (!l.starts_with("#")) {
      ASSERT_FALSE(families.empty());
      EXPECT_TRUE(l.starts_with(families.back())) << l << " after # TYPE " << families.back();
    }
  }
}

TEST(Metrics, PrometheusTextNamesCountersWithTotalAndHasNoUnitOrEof) {
  const std::string text = m::render(sample_snapshot(), m::Format::kPrometheus);
  EXPECT_TRUE(has_line(text, "# TYPE killswitch_allowed_packets_total counter"));
  EXPECT_TRUE(has_line(
      text, "# HELP killswitch_allowed_bytes_total Bytes of the allowed packets, all profiles"));
  EXPECT_TRUE(has_line(text, "killswitch_allowed_packets_total 5"));
  EXPECT_TRUE(has_line(text, "# TYPE killswitch_build_info gauge"));
  EXPECT_TRUE(has_line(text, "# TYPE killswitch_tunnel_state gauge"));
  EXPECT_EQ(text.find("# UNIT"), std::string::npos);
  EXPECT_EQ(text.find("# EOF"), std::string::npos);
}

TEST(Metrics, DaemonDownSaysWhatIsKnowable) {
  m::Snapshot down;
  EXPECT_EQ(m::render(down, m::Format::kOpenMetrics),
            "# TYPE killswitch_daemon_up gauge\n"
            "# HELP killswitch_daemon_up 1 when ksd answers on its admin socket (enforcement "
            "stays pinned without it)\n"
            "killswitch_daemon_up 0\n"
            "# EOF\n");
  down.pinned = true;
  const std::string text = m::render(down, m::Format::kOpenMetrics);
  EXPECT_TRUE(has_line(text, "killswitch_programs_pinned 1"));
  EXPECT_EQ(text.find("killswitch_build"), std::string::npos);
}

TEST(Metrics, HostileNamesStayInsideTheirLabel) {
  m::Snapshot s = sample_snapshot();
  s.apps[0].command = "/tmp/x\"} 1\nkillswitch_daemon_up 0\n# EOF\n\\ --flag";
  s.apps[0].cgroup = "/ks.slice/a\"b\\c\nd";
  const std::string text = m::render(s, m::Format::kOpenMetrics);
  // Exactly one EOF, one daemon_up sample: nothing injected.
  std::size_t eofs = 0, ups = 0;
  for (const auto& l : lines_of(text)) {
    eofs += l == "# EOF";
    ups += l.starts_with("killswitch_daemon_up ");
  }
  EXPECT_EQ(eofs, 1u);
  EXPECT_EQ(ups, 1u);
  EXPECT_TRUE(has_line(text,
                       "killswitch_app_processes{app=\"/ks.slice/a\\\"b\\\\c\\nd\","
                       "profile=\"default\"} 2"));
}

TEST(Metrics, ATunnelNamedTwiceIsOneSeries) {
  m::Snapshot s = sample_snapshot();
  s.profiles[0].tunnels.push_back(s.profiles[0].tunnels[0]);
  const std::string text = m::render(s, m::Format::kOpenMetrics);
  std::size_t n = 0;
  for (const auto& l : lines_of(text))
    n += l.starts_with("killswitch_tunnel_up{profile=\"default\"");
  EXPECT_EQ(n, 1u);
}

TEST(MetricsHttp, FindsTheEndOfTheHead) {
  EXPECT_EQ(m::http_head_end("GET /metrics HTTP/1.0\r\n"), std::string::npos);
  EXPECT_EQ(m::http_head_end("GET /metrics HTTP/1.0\r\n\r\n"), 25u);
  EXPECT_EQ(m::http_head_end("GET /metrics HTTP/1.0\n\nrest"), 23u);
}

TEST(MetricsHttp, AnswersGetAndHeadOfMetrics) {
  auto r = m::parse_http_request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.head);
  EXPECT_EQ(r.format, m::Format::kOpenMetrics);
  const std::string answer = m::http_response(r, "a 1\n# EOF\n");
  EXPECT_EQ(answer,
            "HTTP/1.0 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; "
            "charset=utf-8\r\nContent-Length: 10\r\nConnection: close\r\n\r\na 1\n# EOF\n");
  r = m::parse_http_request("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.head);
  EXPECT_TRUE(
      m::http_response(r, "a 1\n").ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"));
}

TEST(MetricsHttp, NegotiatesTheFormat) {
  // What Prometheus sends.
  auto r = m::parse_http_request(
      "GET /metrics HTTP/1.1\r\naccept: application/openmetrics-text;version=1.0.0,"
      "application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;"
      "q=0.1\r\n\r\n");
  EXPECT_EQ(r.format, m::Format::kOpenMetrics);
  r = m::parse_http_request("GET /metrics HTTP/1.1\r\nAccept: text/plain;version=0.0.4\r\n\r\n");
  EXPECT_EQ(r.format, m::Format::kPrometheus);
  EXPECT_TRUE(m::http_response(r, "").find("Content-Type: text/plain; version=0.0.4") !=
              std::string::npos);
  r = m::parse_http_request("GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n");
  EXPECT_EQ(r.format, m::Format::kOpenMetrics);
}

TEST(MetricsHttp, RefusesBadRequests) {
  EXPECT_EQ(m::parse_http_request("GET /other HTTP/1.0\r\n\r\n").status, 404);
  EXPECT_EQ(m::parse_http_request("POST /metrics HTTP/1.0\r\n\r\n").status, 405);
  EXPECT_EQ(m::parse_http_request("garbage\r\n\r\n").status, 400);
  EXPECT_EQ(m::parse_http_request("\r\n").status, 400);
  EXPECT_EQ(m::parse_http_request("GET /metrics HTTP/2.0\r\n\r\n").status, 505);
  EXPECT_EQ(m::parse_http_request("GET metrics HTTP/1.0\r\n\r\n").status, 400);
  EXPECT_EQ(m::parse_http_request("GET  /metrics HTTP/1.0\r\n\r\n").status, 400);
  EXPECT_EQ(m::parse_http_request("GET /metrics HTTP/1.0\r\nno colon\r\n\r\n").status, 400);
  EXPECT_EQ(m::parse_http_request(std::string(m::kMaxHttpRequestBytes + 1, 'G')).status, 431);
  const auto r = m::parse_http_request("POST /metrics HTTP/1.0\r\n\r\n");
  const std::string answer = m::http_response(r, "ignored");
  EXPECT_TRUE(answer.starts_with("HTTP/1.0 405 Method Not Allowed\r\n"));
  EXPECT_NE(answer.find("Allow: GET, HEAD\r\n"), std::string::npos);
  EXPECT_EQ(answer.find("ignored"), std::string::npos);
  EXPECT_TRUE(answer.ends_with("only GET and HEAD\n"));
}

}  // namespace
