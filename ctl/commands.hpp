// ksctl's commands that live in their own files.
#pragma once

#include <cstdint>
#include <string>

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

}  // namespace ksctl
