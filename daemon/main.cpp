// ksd — the Killswitch daemon. See docs/ and `ksd --help`.
#include <malloc.h>
#include <net/if.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "daemon.hpp"
#include "killswitch/config.hpp"
#include "killswitch/diagnostics.hpp"
#include "killswitch/error.hpp"
#include "killswitch/json_text.hpp"
#include "killswitch/log.hpp"

// ksd's nice value when started at 0 (see run).
constexpr int kDaemonNice = -10;

// ksd --check: the configuration as ksd would read it, and what in it is legal but likely
// not meant. Nothing else is touched: no lock, no pins, no cgroups (an unprivileged user
// may run it before installing a file). With json, one document on stdout either way:
// {"config":PATH,"valid":BOOL,"error":TEXT (when not valid),"profiles":[...],"warnings":[...]}.
static int check_config(const std::string& path, bool json) {
  ks::Config config;
  std::string out;
  ks::JsonText j(out);
  j.begin_object().member("config", path);
  try {
    config = ks::load_config(path);
  } catch (const ks::Error& e) {
    if (json) {
      j.member("valid", false).member("error", e.what()).end_object();
      std::printf("%s\n", out.c_str());
    } else {
      std::fprintf(stderr, "ksd: %s\nksd: configuration is NOT valid; ksd would refuse it\n",
                   e.what());
    }
    return 1;
  }
  const auto warnings = ks::config_warnings(
      config, [](const std::string& name) { return ::if_nametoindex(name.c_str()) != 0; });
  if (json) {
    j.member("valid", true).key("profiles").begin_array();
    for (const auto& p : config.profiles) j.value(p.name);
    j.end_array().key("warnings").begin_array();
    for (const auto& w : warnings) j.value(w);
    j.end_array().end_object();
    std::printf("%s\n", out.c_str());
    return 0;
  }
  for (const auto& w : warnings) std::printf("warning: %s\n", w.c_str());
  std::string names;
  for (const auto& p : config.profiles) names += (names.empty() ? "" : ", ") + p.name;
  std::printf("%s: valid; %zu profile(s): %s%s\n", path.c_str(), config.profiles.size(),
              names.c_str(), warnings.empty() ? "" : " (see the warnings)");
  return 0;
}

static int run(int argc, char** argv) {
  // Large transient buffers (a `ksctl list` reply is 4 MB with 10,000 apps, libbpf reads
  // the kernel's 5.5 MB BTF) come from mmap and go back to the kernel when freed. glibc's
  // default raises this threshold after the first such free, and the next ones then stay
  // in the heap: ksd's resident memory grew from 11 to 29 MB after two lists.
  ::mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  ks::DaemonOptions options;
  options.config_path = std::string(ks::kDefaultConfigPath);
  options.socket_path = ks::ipc::default_socket_path();

  CLI::App app{
      "ksd - Killswitch daemon: pins the kill-switch BPF programs on the protected "
      "cgroup tree and keeps them in step with the tunnel interfaces"};
  app.set_version_flag("--version", std::string("ksd ") + KS_VERSION);
  app.add_option("--config", options.config_path, "configuration file")->capture_default_str();
  app.add_option("--socket", options.socket_path,
                 "admin socket (default: $KILLSWITCH_SOCKET or /run/killswitch/ksd.sock)");
  app.add_option("--pin-dir", options.pin_dir, "where programs, links and maps are pinned (bpffs)")
      ->capture_default_str();
  app.add_option("--slice", options.slice,
                 "name of the protected cgroup tree below the cgroup2 mount")
      ->capture_default_str()
      ->check([](const std::string& s) {
        return s.empty() || s.find('/') != std::string::npos || s == "." || s == ".."
                   ? std::string("must be a single directory name")
                   : std::string();
      });
  app.add_flag("--attach-only", options.attach_only,
               "put enforcement in place (pinned programs, maps, routing rules) and exit; for "
               "the early-boot unit");
  bool check = false;
  app.add_flag("--check", check,
               "read and validate the configuration, print warnings, touch nothing; exit 0 "
               "when it is valid, 1 when not (any user may run it)");
  bool json = false;
  app.add_flag("--json", json, "with --check: print one JSON document (valid, error, warnings)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a usage error exits 1 as ksd(8) documents (CLI11's own
    // codes, 105 and up, are not ours to promise).
    app.exit(e);
    return e.get_exit_code() == 0 ? 0 : 1;
  }
  if (check) return check_config(options.config_path, json);
  if (json) {
    std::fprintf(stderr, "ksd: --json goes with --check\n");
    return 1;
  }

  if (::geteuid() != 0) {
    std::fprintf(stderr, "ksd: must run as root (it loads BPF programs and manages cgroups)\n");
    return 1;
  }
  // What ksctl doctor calls essential: without it nothing could be protected, and libbpf's
  // own messages would not say why.
  auto missing = ks::essential_failures();
  for (const auto& d : missing)
    ks::log_error(d.check + ": " + d.detail + (d.fix.empty() ? "" : " (fix: " + d.fix + ")"));
  if (!missing.empty()) {
    ks::log_error("refusing to start: this system cannot enforce the kill switch (ksctl doctor)");
    return 1;
  }
  // A returning tunnel carries protected traffic only once ksd has written its routes:
  // on a busy machine the scheduler, not ksd's work, made the slowest recoveries (p99
  // 6.5 ms at nice 0, 2.8 ms at -10, docs/benchmarks.md). ksd is idle nearly always, so it
  // takes precedence when it runs, unless whoever started it chose a nice value already.
  errno = 0;
  if (::getpriority(PRIO_PROCESS, 0) == 0 && errno == 0 &&
      ::setpriority(PRIO_PROCESS, 0, kDaemonNice) != 0)
    ks::log_warning(std::string("cannot raise ksd's scheduling priority (nice ") +
                    std::to_string(kDaemonNice) + "): " + std::strerror(errno));
  try {
    ks::Daemon daemon(options);
    if (options.attach_only) {
      ks::log_info("enforcement is in place and pinned; exiting (--attach-only)");
      return 0;
    }
    daemon.run();
  } catch (const ks::Error& e) {
    ks::log_error(e.what());
    return 1;
  }
  return 0;
}

// Nothing escapes as an uncaught exception (that would abort with a core dump and exit
// 134): building the command line parser can still throw (std::bad_alloc).
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ksd: error: %s\n", e.what());
    return 1;
  }
}
