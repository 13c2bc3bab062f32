// ksctl — the Killswitch admin CLI: status, list, reload, protect, verify --self, systemd
// protect/unprotect, teardown (and in files of their own: events, verify, doctor, metrics,
// desktop, notify).
//
// Read commands ask ksd over the admin socket; teardown works on the pinned state
// directly, so protection can be removed even with ksd gone.
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <string_view>

#include "commands.hpp"
#include "killswitch/cgroup.hpp"
#include "killswitch/cli_hints.hpp"
#include "killswitch/config.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/error.hpp"
#include "killswitch/files.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch/launch_proof.hpp"
#include "killswitch/routing.hpp"
#include "killswitch/systemd_units.hpp"
#include "killswitch/transient_scopes.hpp"
#include "output.hpp"

namespace {

constexpr int kReplyTimeoutMs = 10000;  // for each message of ksd's reply

using namespace ksctl;

std::string state_word(const std::string& state) {
  if (state == "up") return paint(state, "32");
  if (state == "down") return paint(state, "33");
  return paint(state, "31");
}

std::string number(const nlohmann::json& j, const char* key) {
  return std::to_string(j.value(key, std::uint64_t{0}));
}

void print_status(const nlohmann::json& s) {
  std::printf("daemon:         %s (pid %d, version %s)\n", paint("running", "32").c_str(),
              s.value("pid", 0), s.value("version", std::string("?")).c_str());
  const auto& programs = s["programs"];
  bool attached = programs.value("attached", false);
  bool pinned = programs.value("pinned", false);
  std::printf("enforcement:    %s, %s (%s)\n",
              attached ? paint("attached", "32").c_str() : paint("NOT ATTACHED", "31").c_str(),
              pinned ? "pinned" : paint("NOT PINNED", "31").c_str(),
              s.value("cgroup_root", std::string()).c_str());
  std::printf("protected apps: %zu\n", s.value("protected_apps", std::size_t{0}));
  const auto& totals = s["counters"];
  std::printf(
      "blocked:        %s attempts (%s packets, %s connects/sends refused); %s without "
      "an event (rate limit)\n",
      number(s, "blocked_total").c_str(), number(totals, "blocked_packets").c_str(),
      number(totals, "blocked_connects").c_str(), number(totals, "events_dropped").c_str());
  std::printf("allowed:        %s packets through tunnels, loopback and allowed LANs\n",
              number(totals, "allowed_packets").c_str());
  for (const auto& [name, p] : s["profiles"].items()) {
    std::string traffic = p.value("traffic", std::string());
    std::printf("\nprofile %s: %s\n", name.c_str(),
                (traffic.rfind("blocked", 0) == 0 ? yellow(traffic) : green(traffic)).c_str());
    for (const auto& t : p["tunnels"]) {
      std::string families;
      if (t.value("ipv4", false)) families += " ipv4";
      if (t.value("ipv6", false)) families += " ipv6";
      std::printf("  tunnel %s %s", pad(t.value("name", std::string()), 16).c_str(),
                  state_word(t.value("state", std::string())).c_str());
      if (t.value("ifindex", 0u))
        std::printf("  ifindex %u%s", t.value("ifindex", 0u), families.c_str());
      std::printf("\n");
    }
    if (p.contains("counters"))
      std::printf("  counters  allowed %s packets, blocked %s attempts\n",
                  number(p["counters"], "allowed_packets").c_str(),
                  number(p["counters"], "blocked").c_str());
    if (!p["dns"].empty()) std::printf("  dns       %s\n", p["dns"].dump().c_str());
    if (!p["allow_lan"].empty()) std::printf("  allow_lan %s\n", p["allow_lan"].dump().c_str());
  }
}

// `ksctl list --json` into a pipe or file: ksd's document minus "ok", passed on part by
// part as it arrives and checked on the way (with 10,000 apps, parsing its 4 MB into a
// JSON tree and writing that out again took longer than ksd took to make it). The check
// reads the parts through an input iterator, which fetches and prints each part when the
// parser reaches it.
class PassThrough {
 public:
  PassThrough(ks::ipc::ReplyReader& reader, std::string_view first, std::size_t skip)
      : reader_(reader), part_(first) {
    std::fwrite("{", 1, 1, stdout);
    std::fwrite(first.data() + skip, 1, first.size() - skip, stdout);
  }

  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = char;
    using difference_type = std::ptrdiff_t;
    using pointer = const char*;
    using reference = const char&;

    explicit Iterator(PassThrough* source = nullptr) : source_(source) {}
    reference operator*() const { return source_->part_[source_->at_]; }
    Iterator& operator++() {
      ++source_->at_;
      return *this;
    }
    Iterator operator++(int) {
      Iterator before = *this;
      ++*this;
      return before;
    }
    // Only "at the end or not" is ever compared (the parser checks before each character).
    bool operator==(const Iterator& other) const { return at_end() == other.at_end(); }

   private:
    bool at_end() const { return source_ == nullptr || !source_->fill(); }
    PassThrough* source_;
  };

 private:
  // True while there is a character to read, fetching (and printing) the next part if needed.
  bool fill() {
    while (at_ == part_.size()) {
      if (!reader_.next(part_)) return false;
      std::fwrite(part_.data(), 1, part_.size(), stdout);
      at_ = 0;
    }
    return true;
  }

  ks::ipc::ReplyReader& reader_;
  std::string_view part_;
  std::size_t at_ = 0;
};

void print_list(const nlohmann::json& l) {
  const auto& apps = l["apps"];
  if (apps.empty()) {
    std::printf("no protected apps\n");
    return;
  }
  Table table({"APP", "PROFILE", "PIDS", "ALLOWED", "BLOCKED", "COMMAND"});
  for (const auto& a : apps) {
    std::string pids;
    std::size_t shown = 0;
    for (const auto& p : a["pids"]) {
      if (++shown > 4) {
        pids += ",+" + std::to_string(a["pids"].size() - 4);
        break;
      }
      pids += (pids.empty() ? "" : ",") + std::to_string(p.get<int>());
    }
    std::string cgroup = a.value("cgroup", std::string());
    const auto& c = a["counters"];
    std::string blocked = number(c, "blocked");
    table.row({cgroup.substr(cgroup.find_last_of('/') + 1), a.value("profile", std::string()), pids,
               number(c, "allowed_packets"), blocked == "0" ? blocked : red(blocked),
               a.value("command", std::string()).substr(0, 120)});
  }
  table.print();
}

struct TeardownOptions {
  std::string socket_path;
  std::string pin_dir;
  std::string slice;
  bool kill_apps = false;
  bool yes = false;    // no question on a terminal
  bool force = false;  // even while ksd runs (then its own pin dir and tree)
  bool json = false;   // what was removed as one JSON document on stdout
};

// Asks on the terminal; true for "y"/"yes". Without a terminal nobody can be asked: true
// (scripts and package removal run it so, with what they name explicitly).
bool confirmed(const std::string& question) {
  if (!::isatty(STDIN_FILENO) || !::isatty(STDERR_FILENO)) return true;
  std::fprintf(stderr, "%s [y/N] ", question.c_str());
  std::string answer;
  if (!std::getline(std::cin, answer)) return false;
  return answer == "y" || answer == "Y" || answer == "yes";
}

int teardown(TeardownOptions o) {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "ksctl: teardown needs root\n");
    return kFailed;
  }
  std::string root = ks::find_cgroup2_mount() + "/" + o.slice;
  // A running ksd would put everything back at once, and it knows what it uses.
  try {
    const nlohmann::json st = ks::ipc::call(o.socket_path, {{"op", "status"}}, 2000);
    const std::string ksd_pins = st.value("pin_dir", o.pin_dir);
    const std::string ksd_root = st.value("cgroup_root", root);
    if (!o.force) {
      std::fprintf(stderr,
                   "ksctl: ksd (pid %lld) is running with pins in %s and the tree %s; it would "
                   "put protection back. Stop it first (systemctl stop ksd), or pass --force "
                   "to remove what it uses anyway. Nothing was removed.\n",
                   st.value("pid", 0LL), ksd_pins.c_str(), ksd_root.c_str());
      return kFailed;
    }
    o.pin_dir = ksd_pins;
    root = ksd_root;
  } catch (const ks::Error&) {
    // ksd is not running (at this socket): the given (or default) pin dir and slice.
  }

  // What was removed: said line by line, or (--json) as one document at the end.
  nlohmann::json report = {{"pin_dir", o.pin_dir},       {"tree", root},
                           {"killed_apps", false},       {"removed_pins", false},
                           {"removed_routing_rules", 0}, {"removed_tree", false}};
  const auto say = [&](const std::string& line) {
    if (!o.json) std::printf("%s\n", line.c_str());
  };
  const auto done = [&](int rc) {
    if (o.json && rc == kOk) std::cout << json_text(report) << "\n";
    return rc;
  };
  ks::PolicyRouting routing;
  const std::size_t rules = routing.our_rules().size();
  const bool pins = ::access(o.pin_dir.c_str(), F_OK) == 0;
  const bool tree = ::access(root.c_str(), F_OK) == 0;
  if (!pins && !tree && rules == 0) {
    say("nothing to remove: no pins in " + o.pin_dir + ", no tree " + root +
        ", no Killswitch routing rules");
    return done(kOk);
  }
  std::string plan;
  if (pins) plan += "\n  the pinned programs, links and maps in " + o.pin_dir;
  if (rules) plan += "\n  " + std::to_string(rules) + " routing rule(s) and the profiles' tables";
  if (tree) plan += "\n  the protected tree " + root;
  const bool populated = tree && ks::cgroup_populated(root);
  if (populated && o.kill_apps) plan += "\n  after killing the processes still running in it";
  // Refusals first: nobody is asked a question whose "yes" would then be refused.
  if (populated && !o.kill_apps) {
    std::fprintf(stderr,
                 "ksctl: protected processes are still running in %s; removing protection "
                 "would let them send outside the tunnel. Stop them, or pass --kill-apps. "
                 "Nothing was removed.\n",
                 root.c_str());
    return kFailed;
  }
  if (!o.yes && !confirmed("Remove protection:" + plan + "\n?")) {
    std::fprintf(stderr, "ksctl: nothing was removed\n");
    return kFailed;
  }

  // Looked at again: a process may have started in the tree while the question was open.
  if (tree && ks::cgroup_populated(root)) {
    if (!o.kill_apps) {
      std::fprintf(stderr,
                   "ksctl: a protected process started in %s meanwhile; nothing was removed\n",
                   root.c_str());
      return kFailed;
    }
    // cgroup.kill (5.14+) kills the whole subtree at once, including new forks.
    FILE* f = std::fopen((root + "/cgroup.kill").c_str(), "w");
    if (!f || std::fputs("1", f) < 0 || std::fclose(f) != 0) {
      std::fprintf(stderr, "ksctl: cannot kill the processes in %s\n", root.c_str());
      return kFailed;
    }
    for (int i = 0; i < 100 && ks::cgroup_populated(root); ++i) ::usleep(20000);
    say("killed the protected processes in " + root);
    report["killed_apps"] = true;
  }
  if (pins) {
    ks::Enforcement::remove_pins(o.pin_dir);
    say("removed the pins in " + o.pin_dir);
    report["removed_pins"] = true;
  }
  // The steering rules and tables live in this network namespace (ksd's, normally).
  routing.remove_all();
  if (rules) say("removed " + std::to_string(rules) + " routing rule(s) and their tables");
  report["removed_routing_rules"] = rules;
  if (!tree) return done(kOk);
  // On a systemd host the slices are units: while they are active, systemd re-creates
  // their cgroups (at the next daemon-reload, for one). The tree is empty, so stopping
  // them stops nothing else.
  const std::string slice_unit = root.substr(root.find_last_of('/') + 1);
  if (ks::systemd::is_systemd_host()) {
    try {
      ks::systemd::stop_unit(slice_unit);
    } catch (const ks::Error& e) {
      std::fprintf(stderr, "ksctl: %s\n", e.what());
    }
  }
  if (!ks::remove_cgroup_tree(root)) {
    std::fprintf(stderr, "ksctl: could not remove %s\n", root.c_str());
    return kFailed;
  }
  say("removed the protected tree " + root);
  report["removed_tree"] = true;
  return done(kOk);
}

// ---- verify --self: is the caller's own cgroup covered by enforcement? ----

int verify_self(const std::string& pin_dir, const std::string& slice) {
  Checks checks;
  std::string cgroup = ks::cgroup_of_pid(0);
  bool inside = cgroup == "/" + slice || cgroup.rfind("/" + slice + "/", 0) == 0;
  checks.line(inside ? ks::Verdict::kOk : ks::Verdict::kFail, "cgroup",
              cgroup + (inside ? " is in the protected tree" : " is not below /" + slice));

  bool pins_checked = false;
  ks::ProgramIds pinned;
  if (::geteuid() == 0) {
    try {
      pinned = ks::Enforcement::pinned_program_ids(pin_dir);
      pins_checked = true;
      checks.line(ks::Verdict::kOk, "pins",
                  std::to_string(pinned.size()) + " programs pinned in " + pin_dir);
    } catch (const ks::Error& e) {
      checks.line(ks::Verdict::kFail, "pins", e.what());
    }
  } else {
    checks.line(ks::Verdict::kSkip, "pins", "needs root (the pin directory is root-only)");
  }

  // Every slice on the way from the tree root down to this cgroup must be classified: a
  // slice systemd has just re-created has the programs (inherited) but not yet its
  // profile, and its units would use the root's profile and tunnel until ksd notices.
  if (pins_checked && inside) {
    std::string unclassified;
    const std::string mount = ks::find_cgroup2_mount();
    std::string path;
    std::size_t start = 1;
    while (start <= cgroup.size()) {
      std::size_t end = cgroup.find('/', start);
      if (end == std::string::npos) end = cgroup.size();
      const std::string component = cgroup.substr(start, end - start);
      path += "/" + component;
      start = end + 1;
      if (!component.ends_with(".slice")) continue;
      try {
        if (!ks::Enforcement::pinned_cgroup_profile(pin_dir, ks::cgroup_id(mount + path)))
          unclassified += (unclassified.empty() ? "" : ", ") + path;
      } catch (const ks::Error& e) {
        unclassified += (unclassified.empty() ? "" : ", ") + path + " (" + e.what() + ")";
      }
    }
    checks.line(unclassified.empty() ? ks::Verdict::kOk : ks::Verdict::kFail, "profile",
                unclassified.empty()
                    ? "every slice on the way is classified"
                    : "not classified yet (re-created? ksd classifies it within a second): " +
                          unclassified);
  }

  if (pins_checked && ks::can_query_programs()) {
    try {
      ks::UniqueFd cg = ks::open_cgroup(ks::find_cgroup2_mount() + cgroup);
      std::string missing = ks::check_effective(cg.get(), pinned);
      checks.line(missing.empty() ? ks::Verdict::kOk : ks::Verdict::kFail, "effective",
                  missing.empty() ? "every pinned program is in force on this cgroup"
                                  : "not in force on this cgroup: " + missing);
    } catch (const ks::Error& e) {
      checks.line(ks::Verdict::kFail, "effective", e.what());
    }
  } else {
    checks.line(
        ks::Verdict::kSkip, "effective",
        pins_checked ? "needs CAP_NET_ADMIN (BPF_PROG_QUERY)" : "no pinned programs to compare");
  }

  try {
    ks::prove_canaries();
    checks.line(ks::Verdict::kOk, "canaries",
                "this process's sockets are judged (egress drop, connect refusal)");
  } catch (const ks::Error& e) {
    checks.line(ks::Verdict::kFail, "canaries", e.what());
  }
  if (checks.failed()) {
    std::fprintf(stderr, "ksctl: this process is NOT protected by Killswitch\n");
    return kFailed;
  }
  std::printf("protected: %s\n", cgroup.c_str());
  return kOk;
}

// ---- systemd protect / unprotect ----

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) ks::throw_errno("cannot read /proc/self/exe");
  return std::string(buf, static_cast<std::size_t>(n));
}

// The profiles ksd knows; from the config file when ksd does not answer.
std::set<std::string> known_profiles(const std::string& socket_path, const std::string& config) {
  std::set<std::string> names;
  try {
    nlohmann::json reply = ks::ipc::call(socket_path, {{"op", "status"}});
    if (reply.value("ok", false) && reply.contains("profiles")) {
      for (const auto& [name, p] : reply["profiles"].items()) names.insert(name);
      return names;
    }
  } catch (const ks::Error&) {
    // ksd is down: the configuration file says which profiles will exist.
  }
  for (const auto& p : ks::load_config(config).profiles) names.insert(p.name);
  return names;
}

int systemd_protect(const std::string& unit, const std::string& profile,
                    const std::string& unit_dir, const std::string& socket_path,
                    const std::string& config, bool json) {
  if (::geteuid() != 0) throw ks::Error("systemd protect needs root (it writes " + unit_dir + ")");
  std::string service = ks::systemd::service_name(unit);
  auto profiles = known_profiles(socket_path, config);
  if (!profiles.count(profile)) {
    std::string list;
    for (const auto& p : profiles) list += (list.empty() ? "" : ", ") + p;
    throw ks::Error("unknown profile '" + profile + "' (known: " + list + ")");
  }
  std::string state = ks::systemd::load_state(service);
  if (state == "not-found")
    throw ks::Error("unknown unit " + service + " (systemctl cat " + service + ")");
  if (state == "masked") throw ks::Error(service + " is masked");
  std::string path = ks::systemd::drop_in_path(unit_dir, service);
  std::string text = ks::systemd::drop_in_text(profile, self_exe());
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec)
    throw ks::Error("cannot create " + std::filesystem::path(path).parent_path().string() + ": " +
                    ec.message());
  std::ifstream old(path);
  std::string current((std::istreambuf_iterator<char>(old)), std::istreambuf_iterator<char>());
  bool changed = current != text;
  if (changed) ks::write_file_atomically(path, text);
  ks::systemd::daemon_reload();
  const bool restart = changed && ks::systemd::active_state(service) == "active";
  if (json) {
    std::cout << json_text({{"unit", service},
                            {"profile", profile},
                            {"slice", ks::systemd::profile_slice(profile)},
                            {"drop_in", path},
                            {"changed", changed},
                            {"restart_needed", restart}})
              << "\n";
    return kOk;
  }
  std::printf("%s %s: runs in %s (profile %s), drop-in %s\n", service.c_str(),
              changed ? "protected" : "already protected",
              ks::systemd::profile_slice(profile).c_str(), profile.c_str(), path.c_str());
  if (restart)
    std::printf(
        "%s is running: restart it to move it into the protected slice "
        "(systemctl restart %s)\n",
        service.c_str(), service.c_str());
  return kOk;
}

int systemd_unprotect(const std::string& unit, const std::string& unit_dir, bool json) {
  if (::geteuid() != 0)
    throw ks::Error("systemd unprotect needs root (it writes " + unit_dir + ")");
  std::string service = ks::systemd::service_name(unit);
  std::string path = ks::systemd::drop_in_path(unit_dir, service);
  bool existed = ::unlink(path.c_str()) == 0;
  if (!existed && errno != ENOENT) ks::throw_errno("cannot remove " + path);
  ::rmdir(std::filesystem::path(path).parent_path().c_str());  // only if now empty
  ks::systemd::daemon_reload();
  if (json) {
    std::cout << json_text({{"unit", service}, {"drop_in", path}, {"removed", existed}}) << "\n";
    return kOk;
  }
  std::printf(
      "%s %s\n", service.c_str(),
      existed ? "unprotected (restart it to leave the protected slice)" : "was not protected");
  return kOk;
}

}  // namespace

// A whole number from lo to hi, checked before CLI11 converts it: its own validators say
// "Value abc not in range 0.000000 to 1797693134862315...", a 309-digit number.
static CLI::Validator whole_number_in(std::uint64_t lo, std::uint64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        std::uint64_t v = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi)
          return "\"" + text + "\" is not a whole number from " + std::to_string(lo) + " to " +
                 std::to_string(hi);
        return std::string();
      },
      "");
}

static int run(int argc, char** argv) {
  std::string socket_path = ks::ipc::default_socket_path();
  bool json = false;

  CLI::App app{"ksctl - administer the Killswitch VPN kill switch"};
  app.set_version_flag("--version", std::string("ksctl ") + KS_VERSION);
  app.add_option("--socket", socket_path,
                 "ksd admin socket (default: $KILLSWITCH_SOCKET or /run/killswitch/ksd.sock)");
  std::string pin_dir = "/sys/fs/bpf/killswitch";
  app.add_option("--pin-dir", pin_dir,
                 "pin directory, read when ksd is down (status) or removed (teardown)")
      ->capture_default_str();
  app.require_subcommand(1);
  // Global options (--socket, --pin-dir) are taken after the subcommand too:
  // `ksctl status --socket PATH` as well as `ksctl --socket PATH status`.
  app.fallthrough();

  auto* status = app.add_subcommand("status", "daemon, enforcement, tunnels and totals");
  status->add_flag("--json", json, "print one JSON document");
  auto* list = app.add_subcommand("list", "one row per protected app");
  list->add_flag("--json", json, "print one JSON document");
  app.add_subcommand("reload", "re-read the configuration (a bad file changes nothing)")
      ->add_flag("--json", json, "print one JSON document");

  ksctl::EventsOptions events_options;
  auto* events = app.add_subcommand("events",
                                    "blocked attempts: time, app, pid, hook, "
                                    "destination, reason");
  events->add_flag("--json", events_options.json,
                   "one JSON document (with --follow: one JSON object per line)");
  events->add_flag("-f,--follow", events_options.follow, "keep printing new events");
  events->add_option("--since", events_options.since, "first sequence number to show")
      ->type_name("SEQ");
  events
      ->add_option("--limit", events_options.limit,
                   "show at most this many, the newest (1 to " +
                       std::to_string(ks::ipc::kMaxEventsPerReply) + ")")
      ->type_name("N")
      ->check(whole_number_in(1, ks::ipc::kMaxEventsPerReply));

  int protect_pid = 0;
  std::string protect_profile = "default";
  auto* protect = app.add_subcommand(
      "protect", "adopt a running process (refused if it already holds network sockets)");
  protect->add_option("--pid", protect_pid, "process id")
      ->required()
      ->type_name("PID")
      ->check(whole_number_in(1, std::numeric_limits<int>::max()));
  protect->add_option("--profile", protect_profile, "profile")->capture_default_str();
  protect->add_flag("--json", json, "print one JSON document");

  std::string slice = "killswitch.slice";
  TeardownOptions teardown_options;
  auto* down = app.add_subcommand(
      "teardown",
      "remove protection: unpin the programs, remove the routing rules and the protected "
      "tree (refused while ksd runs unless --force; asks on a terminal unless --yes)");
  down->add_option("--slice", slice, "protected tree name (when ksd is not running)")
      ->capture_default_str();
  down->add_flag("--kill-apps", teardown_options.kill_apps, "kill protected processes first");
  down->add_flag("--yes,-y", teardown_options.yes, "do not ask");
  down->add_flag("--json", teardown_options.json,
                 "print what was removed as one JSON document (refusals: stderr, exit 1)");
  down->add_flag("--force", teardown_options.force,
                 "even while ksd runs: remove the pins and tree it uses (it reports them)");

  ksctl::DoctorOptions doctor_options;
  doctor_options.config_path = std::string(ks::kDefaultConfigPath);
  auto* doctor = app.add_subcommand(
      "doctor",
      "can this machine run the kill switch (kernel, BPF, cgroup2, bpffs, BTF, privileges, "
      "firewall), and is it set up (config, ksd, its socket, group, pins)? With fixes");
  doctor->add_flag("--json", doctor_options.json, "print one JSON document");
  doctor->add_option("--config", doctor_options.config_path, "configuration file to check")
      ->capture_default_str();

  ksctl::SetupOptions setup_options;
  setup_options.config_path = std::string(ks::kDefaultConfigPath);
  auto* setup = app.add_subcommand(
      "setup",
      "find this machine's VPN tunnels and their DNS servers, show the profile they call for "
      "and why; --write puts it in the configuration file");
  setup->add_flag("--write", setup_options.write,
                  "write the configuration file (not over one you edited: see --force)");
  setup->add_flag("--force", setup_options.force,
                  "with --write: replace an edited file (a copy is kept as FILE.bak-TIME)");
  setup->add_option("--config", setup_options.config_path, "configuration file to write")
      ->capture_default_str();
  setup->add_option("--profile", setup_options.profile, "name of the profile to write")
      ->capture_default_str();
  setup
      ->add_option("--tunnel", setup_options.tunnels,
                   "use this interface (repeatable, in order of preference) instead of the "
                   "tunnels that are up")
      ->type_name("IFNAME");
  setup
      ->add_option("--wireguard-dir", setup_options.sources.wireguard_dir,
                   "where wg-quick's NAME.conf files are")
      ->capture_default_str();
  setup
      ->add_option("--resolvconf-dir", setup_options.sources.resolvconf_dirs,
                   "where resolvconf keeps its per-interface records (repeatable)")
      ->capture_default_str();
  setup->add_flag("--json", setup_options.json, "print one JSON document");
  setup->footer(
      "Examples:\n  ksctl setup                  # what it finds, and the profile it would "
      "write\n  sudo ksctl setup --write     # write /etc/killswitch/config.toml\n  "
      "ksctl setup --tunnel wg0-mullvad --profile mullvad\n\nExit: 0 a profile was found "
      "(and written with --write), 1 no tunnel found or nothing written, 2 usage.");
  ksctl::MetricsOptions metrics_options;
  std::string metrics_format = "openmetrics";
  int metrics_timeout_s = 5;
  auto* metrics = app.add_subcommand(
      "metrics",
      "counters, tunnel states and protected apps as OpenMetrics text for Prometheus "
      "(exit 3, with killswitch_daemon_up 0, when ksd is down)");
  metrics
      ->add_option("--format", metrics_format,
                   "openmetrics, or prometheus (text format 0.0.4, for promtool check metrics)")
      ->check(CLI::IsMember({"openmetrics", "prometheus"}))
      ->capture_default_str();
  metrics->add_flag("--http", metrics_options.http,
                    "answer one HTTP request read from stdin on stdout (inetd style: "
                    "killswitch-metrics.socket); the format follows its Accept header");
  metrics
      ->add_option("--timeout", metrics_timeout_s,
                   "seconds to wait for the request (--http) and for each of ksd's answers")
      ->type_name("SECONDS")
      ->check(whole_number_in(1, 60))
      ->capture_default_str();

  bool verify_self_flag = false;
  ksctl::VerifyOptions verify_options;
  auto* verify = app.add_subcommand(
      "verify", "live self-test of the kill switch (the five-minute manual test, automated)");
  verify->add_flag("--self", verify_self_flag,
                   "only check the caller's own cgroup (for ExecStartPre=)");
  verify->add_option("--slice", slice, "protected tree name (--self)")->capture_default_str();
  verify->add_option("--profile", verify_options.profile, "profile whose tunnel is tested")
      ->capture_default_str();
  verify->add_flag("--json", verify_options.json, "print one JSON document");

  std::string unit, unit_profile = "default", unit_dir = ks::systemd::kDefaultUnitDir;
  std::string config_path(ks::kDefaultConfigPath);
  auto* sd = app.add_subcommand("systemd", "put services into the protected slice");
  sd->require_subcommand(1);
  auto* sd_protect = sd->add_subcommand(
      "protect", "write the drop-in that runs UNIT protected, then daemon-reload");
  sd_protect->add_option("unit", unit, "service name (foo or foo.service)")->required();
  sd_protect->add_option("--profile", unit_profile, "profile")->capture_default_str();
  sd_protect->add_option("--config", config_path, "config file, read when ksd is down")
      ->capture_default_str();
  auto* sd_unprotect =
      sd->add_subcommand("unprotect", "remove the drop-in of UNIT, then daemon-reload");
  sd_unprotect->add_option("unit", unit, "service name")->required();
  for (auto* cmd : {sd_protect, sd_unprotect}) {
    cmd->add_option("--unit-dir", unit_dir, "where drop-ins go")->capture_default_str();
    cmd->add_flag("--json", json, "print one JSON document");
  }

  ksctl::DesktopOptions desktop_options;
  auto* desktop = app.add_subcommand(
      "desktop",
      "start desktop applications protected from the menu: a user-level override of their "
      "desktop entry runs them through ksrun (run as the user, not root)");
  desktop->require_subcommand(1);
  auto* dt_protect = desktop->add_subcommand(
      "protect",
      "write $XDG_DATA_HOME/applications/ID.desktop, a copy of APP's entry whose Exec lines "
      "run it through ksrun (not over an entry of your own)");
  dt_protect
      ->add_option("app", desktop_options.app,
                   "desktop file id (org.qbittorrent.qBittorrent) or name (qbittorrent)")
      ->required();
  dt_protect->add_option("--profile", desktop_options.profile, "profile")->capture_default_str();
  dt_protect
      ->add_option("--ksrun", desktop_options.ksrun,
                   "absolute path of ksrun for the Exec lines (default: next to ksctl, else "
                   "on $PATH)")
      ->type_name("PATH");
  auto* dt_unprotect = desktop->add_subcommand(
      "unprotect", "remove the override ksctl wrote for APP (never a file it did not write)");
  dt_unprotect->add_option("app", desktop_options.app, "desktop file id or name")->required();
  auto* dt_list = desktop->add_subcommand("list", "the overrides ksctl wrote");
  for (auto* cmd : {dt_protect, dt_unprotect, dt_list})
    cmd->add_flag("--json", desktop_options.json, "print one JSON document");

  ksctl::NotifyOptions notify_options;
  bool no_daemon_notices = false;
  auto* notify = app.add_subcommand(
      "notify",
      "show blocked attempts as desktop notifications (session bus), at most one per app per "
      "interval; runs until SIGTERM (systemd user unit killswitch-notify.service)");
  notify
      ->add_option("--interval", notify_options.interval_s,
                   "seconds between two notifications of one app (the attempts in between "
                   "are counted and summed up in one)")
      ->type_name("SECONDS")
      ->check(whole_number_in(1, 86400))
      ->capture_default_str();
  notify
      ->add_option("--max-backoff", notify_options.max_backoff_s,
                   "longest wait between two attempts to reach ksd again")
      ->type_name("SECONDS")
      ->check(whole_number_in(1, 3600))
      ->capture_default_str();
  notify->add_flag("--no-daemon-notices", no_daemon_notices,
                   "no notification when ksd becomes unreachable or comes back");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 says only "A subcommand is required" for a mistyped one: name it, and the
    // command it was probably meant to be.
    std::vector<std::string_view> commands;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
      commands.push_back(sub->get_name());
    static constexpr std::string_view kWithValue[] = {"--socket", "--pin-dir"};
    const std::vector<std::string> args(argv + 1, argv + argc);
    const auto word = ks::first_word(args, kWithValue);
    if (e.get_exit_code() != 0 && word &&
        std::find(commands.begin(), commands.end(), *word) == commands.end()) {
      const auto hint = ks::closest_word(*word, commands);
      std::fprintf(stderr, "ksctl: unknown command \"%s\"%s; run ksctl --help for the list\n",
                   word->c_str(), hint ? (" (did you mean " + *hint + "?)").c_str() : "");
      return kUsage;
    }
    int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }

  try {
    if (doctor->parsed()) {
      doctor_options.socket_path = socket_path;
      doctor_options.pin_dir = pin_dir;
      return ksctl::doctor_command(doctor_options);
    }
    if (setup->parsed()) return ksctl::setup_command(setup_options);
    if (desktop->parsed()) {
      desktop_options.action = dt_protect->parsed()     ? "protect"
                               : dt_unprotect->parsed() ? "unprotect"
                                                        : "list";
      (void)dt_list;
      return ksctl::desktop_command(desktop_options);
    }
    if (notify->parsed()) {
      notify_options.socket_path = socket_path;
      notify_options.daemon_notices = !no_daemon_notices;
      return ksctl::notify_command(notify_options);
    }

    if (events->parsed()) {
      events_options.socket_path = socket_path;
      return ksctl::events_command(events_options);
    }
    if (metrics->parsed()) {
      metrics_options.socket_path = socket_path;
      metrics_options.pin_dir = pin_dir;
      metrics_options.format = metrics_format == "prometheus" ? ks::metrics::Format::kPrometheus
                                                              : ks::metrics::Format::kOpenMetrics;
      metrics_options.timeout_ms = metrics_timeout_s * 1000;
      return ksctl::metrics_command(metrics_options);
    }
    if (down->parsed()) {
      teardown_options.socket_path = socket_path;
      teardown_options.pin_dir = pin_dir;
      teardown_options.slice = slice;
      return teardown(teardown_options);
    }
    if (verify->parsed()) {
      if (verify_self_flag) return verify_self(pin_dir, slice);
      verify_options.socket_path = socket_path;
      verify_options.pin_dir = pin_dir;
      return ksctl::verify_command(verify_options);
    }
    if (sd_protect->parsed())
      return systemd_protect(unit, unit_profile, unit_dir, socket_path, config_path, json);
    if (sd_unprotect->parsed()) return systemd_unprotect(unit, unit_dir, json);

    nlohmann::json request;
    if (status->parsed())
      request = {{"op", "status"}};
    else if (list->parsed())
      request = {{"op", "list"}};
    else if (protect->parsed())
      request = {{"op", "protect"}, {"pid", protect_pid}, {"profile", protect_profile}};
    else
      request = {{"op", "reload"}};

    nlohmann::json reply;
    try {
      ks::UniqueFd connection = ks::ipc::connect_to(socket_path);
      ks::ipc::send_message(connection.get(), request);
      ks::ipc::ReplyReader reader(connection.get(), kReplyTimeoutMs);
      std::string_view first;
      if (!reader.next(first)) throw ks::Error("malformed answer (empty)");
      // ksd writes "ok" first; anything else (an error) is handled as any reply.
      constexpr std::string_view kOkPrefix = R"({"ok":true,)";
      if (list->parsed() && json && !::isatty(STDOUT_FILENO) && first.starts_with(kOkPrefix)) {
        PassThrough pass(reader, first, kOkPrefix.size());
        const bool valid =
            nlohmann::json::accept(PassThrough::Iterator(&pass), PassThrough::Iterator());
        std::fputc('\n', stdout);
        // What came is printed already; a broken document still fails the command.
        if (!valid) throw ks::Error("malformed answer (not a JSON document)");
        return std::fflush(stdout) == 0 ? kOk : kFailed;
      }
      std::string text(first);
      for (std::string_view part; reader.next(part);) text.append(part);
      reply = nlohmann::json::parse(text, nullptr, false);
      if (reply.is_discarded() || !reply.is_object())
        throw ks::Error("malformed answer (not a JSON object)");
    } catch (const ks::Error& e) {
      if (status->parsed()) {
        // Say so, but also that enforcement does not depend on the daemon.
        bool pinned = ks::Enforcement::pins_present(pin_dir);
        if (json) {
          std::cout << nlohmann::json{
              {"daemon", "not running"}, {"error", e.what()}, {"programs", {{"pinned", pinned}}}};
          std::cout << "\n";
        } else {
          std::printf("daemon:      %s (%s)\n", paint("not running", "31").c_str(), e.what());
          std::printf("enforcement: %s\n",
                      pinned
                          ? "still pinned: protected apps stay blocked from non-tunnel interfaces"
                          : "no pinned programs found (or not readable without root)");
        }
        return kDaemonDown;
      }
      std::fprintf(stderr, "ksctl: %s\n", e.what());
      return kDaemonDown;
    }
    if (!reply.value("ok", false)) {
      std::fprintf(stderr, "ksctl: %s\n", reply.value("error", std::string("failed")).c_str());
      return kFailed;
    }
    reply.erase("ok");
    if (json && !status->parsed() && !list->parsed() && !protect->parsed())
      reply["reloaded"] = true;
    if (json) {
      std::cout << json_text(reply) << "\n";
    } else if (status->parsed()) {
      print_status(reply);
    } else if (list->parsed()) {
      print_list(reply);
    } else if (protect->parsed()) {
      std::printf("process %d protected in %s\n", protect_pid,
                  reply.value("cgroup", std::string()).c_str());
    } else {
      std::printf("configuration reloaded\n");
    }
    return kOk;
  } catch (const ks::Error& e) {
    std::fprintf(stderr, "ksctl: %s\n", e.what());
    return kFailed;
  }
}

// Nothing escapes as an uncaught exception (that would abort with a core dump and exit
// 134): building the command line parser can still throw (std::bad_alloc).
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ksctl: error: %s\n", e.what());
    return ksctl::kFailed;
  }
}
