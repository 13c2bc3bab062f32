// ksctl's commands that live in their own files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "killswitch/metrics.hpp"
#include "killswitch/setup_plan.hpp"

namespace ksctl {

// Exit codes (man ksctl(8), docs/interface.md).
constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kUsage = 2;
constexpr int kDaemonDown = 3;

struct EventsOptions {
  std::string socket_path;
  bool json = false;
  bool follow = false;
  std::uint64_t since = 0;
  std::size_t limit = 0;  // 0: 1000, or 10 with --follow
};
int events_command(const EventsOptions& options);

struct VerifyOptions {
  std::string socket_path;
  std::string pin_dir;
  std::string profile = "default";
  bool json = false;
};
int verify_command(const VerifyOptions& options);

struct DoctorOptions {
  bool json = false;
  std::string socket_path;
  std::string pin_dir;
  std::string config_path;
};
int doctor_command(const DoctorOptions& options);

struct SetupOptions {
  bool json = false;
  bool write = false;
  bool force = false;
  std::string config_path;
  std::string profile = "default";
  std::vector<std::string> tunnels;
  ks::setup::Sources sources;
};
// Exit: 0 a profile was proposed (and written with --write), 1 no tunnel found or the file
// was not written, 2 usage.
int setup_command(const SetupOptions& options);
struct MetricsOptions {
  std::string socket_path;
  std::string pin_dir;
  ks::metrics::Format format = ks::metrics::Format::kOpenMetrics;
  bool http = false;      // answer one HTTP request read from stdin (socket activation)
  int timeout_ms = 5000;  // for reading the request, and for each of ksd's answers
};
// Exit 0; 3 when ksd does not answer (what is knowable is printed all the same); with
// --http 0 when the answer was 200, 1 otherwise.
int metrics_command(const MetricsOptions& options);

struct DesktopOptions {
  std::string action;  // protect, unprotect or list
  std::string app;     // desktop file id, or a name for it
  std::string profile = "default";
  std::string ksrun;  // empty: the ksrun next to ksctl, else the one on $PATH
  bool json = false;
};
// Exit: 0 done, 1 not found, ambiguous, or refused (a file ksctl did not write), 2 usage.
int desktop_command(const DesktopOptions& options);

struct NotifyOptions {
  std::string socket_path;
  int interval_s = 30;     // at most one notification per app per interval
  int max_backoff_s = 30;  // reconnecting to ksd: 0.5 s, doubling up to this
  bool daemon_notices = true;
};
// Runs until SIGTERM, SIGINT or SIGHUP (exit 0).
int notify_command(const NotifyOptions& options);

}  // namespace ksctl
