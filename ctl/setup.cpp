// ksctl setup: shows the profile this machine's VPN calls for and why; --write puts it in
// the configuration file, never silently over one the user wrote.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "commands.hpp"
#include "killswitch/config.hpp"
#include "killswitch/error.hpp"
#include "killswitch/files.hpp"
#include "killswitch/json_text.hpp"
#include "output.hpp"

namespace ksctl {
namespace {

namespace fs = std::filesystem;
using ks::setup::Proposal;

nlohmann::json proposal_json(const Proposal& p) {
  nlohmann::json tunnels = nlohmann::json::array();
  for (const auto& t : p.tunnels) {
    nlohmann::json dns = nlohmann::json::array();
    for (const auto& a : t.dns) dns.push_back(ks::address_text(a));
    nlohmann::json entry = {{"name", t.name},       {"ifindex", t.ifindex}, {"up", t.up},
                            {"what", t.what},       {"why", t.why},         {"dns", dns},
                            {"dns_why", t.dns_why}, {"chosen", t.chosen}};
    if (!t.chosen) entry["left_out"] = t.left_out;
    tunnels.push_back(std::move(entry));
  }
  nlohmann::json dns = nlohmann::json::array();
  for (const auto& a : p.dns) dns.push_back(ks::address_text(a));
  return {{"profile", p.profile}, {"tunnels", tunnels},     {"chosen_tunnels", p.chosen_tunnels},
          {"dns", dns},           {"warnings", p.warnings}, {"not_detected", p.not_detected},
          {"config", p.toml}};
}

void print_proposal(const Proposal& p) {
  std::printf("Tunnels found:\n");
  if (p.tunnels.empty()) std::printf("  (none)\n");
  for (const auto& t : p.tunnels) {
    std::printf("  %s %s: %s%s\n", t.chosen ? green("+").c_str() : "-", t.name.c_str(),
                t.what.c_str(), t.chosen ? "" : " (left out)");
    for (const auto& why : t.why) std::printf("      found: %s\n", why.c_str());
    for (const auto& why : t.dns_why) std::printf("      dns:   %s\n", why.c_str());
    if (!t.chosen) std::printf("      left out: %s\n", t.left_out.c_str());
  }
  if (!p.not_detected.empty()) {
    std::printf("Could not look at:\n");
    for (const auto& what : p.not_detected) std::printf("  %s\n", what.c_str());
  }
  if (!p.warnings.empty()) {
    std::printf("Look at this:\n");
    for (const auto& w : p.warnings) std::printf("  %s %s\n", yellow("!").c_str(), w.c_str());
  }
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The configuration file the package ships, unedited: one `default` profile, tunnel wg0,
// nothing else. Replacing it is what a first setup is for (a copy is still kept).
bool is_shipped_example(const std::string& text, const std::string& path) {
  try {
    const ks::Config c = ks::parse_config(text, path);
    return c.profiles.size() == 1 && c.profiles[0].name == "default" &&
           c.profiles[0].tunnels == std::vector<std::string>{"wg0"} && c.profiles[0].dns.empty() &&
           c.profiles[0].allow_lan.empty();
  } catch (const ks::Error&) {
    return false;
  }
}

std::string timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y%m%dT%H%M%S", &tm);
  return text;
}

// The configuration's directory, made if missing (a first install from source has none).
void make_parent(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (parent.empty() || fs::exists(parent, ec)) return;
  fs::create_directories(parent, ec);
  if (ec) throw ks::Error("cannot create " + parent.string() + ": " + ec.message());
  ::chmod(parent.c_str(), 0755);
}

}  // namespace

int setup_command(const SetupOptions& options) {
  if (!ks::is_valid_profile_name(options.profile)) {
    std::fprintf(stderr, "ksctl: setup: --profile %s: a profile name is 1 to 31 of A-Z a-z 0-9 _\n",
                 options.profile.c_str());
    return kUsage;
  }
  for (const auto& name : options.tunnels) {
    if (!ks::is_valid_interface_name(name) || ks::valid_utf8(name) != name) {
      std::fprintf(stderr,
                   "ksctl: setup: --tunnel %s: not a valid interface name (or not UTF-8, which a "
                   "configuration file cannot hold)\n",
                   name.c_str());
      return kUsage;
    }
  }
  const auto seen = ks::setup::observe(options.sources);
  const Proposal proposal = ks::setup::plan_setup(
      seen, ks::setup::Request{.profile = options.profile, .tunnels = options.tunnels});

  nlohmann::json out = proposal_json(proposal);
  out["path"] = options.config_path;
  out["written"] = false;
  if (!options.json) print_proposal(proposal);
  if (proposal.toml.empty()) {
    if (options.json) std::cout << json_text(out) << "\n";
    return kFailed;
  }
  if (!options.write) {
    if (options.json) {
      std::cout << json_text(out) << "\n";
    } else {
      std::printf("\nThe configuration it would write (ksctl setup --write puts it in %s):\n\n%s",
                  options.config_path.c_str(), proposal.toml.c_str());
    }
    return kOk;
  }

  // --write: never over a file the user wrote, unless told (and then a copy is kept).
  const auto existing = read_file(options.config_path);
  struct stat st {};
  const bool present = ::stat(options.config_path.c_str(), &st) == 0;
  std::string backup;
  std::string refusal;
  if (present && !existing) {
    refusal = options.config_path + " exists but cannot be read: nothing written" +
              (::geteuid() != 0 ? " (run as root)" : "");
  } else if (existing && *existing == proposal.toml) {
    out["unchanged"] = true;
  } else if (existing && !options.force && !is_shipped_example(*existing, options.config_path)) {
    refusal = options.config_path +
              " exists and is not what setup would write: nothing written. Compare it with the "
              "profile above; --force replaces it (the old file is kept as " +
              options.config_path + ".bak-TIME)";
  } else {
    try {
      if (existing) {
        // Never over an earlier copy (two runs in one second).
        backup = options.config_path + ".bak-" + timestamp();
        std::error_code ec;
        for (int n = 1; fs::exists(backup, ec); ++n)
          backup = options.config_path + ".bak-" + timestamp() + "-" + std::to_string(n);
        ks::write_file_atomically(backup, *existing, st.st_mode & 07777);
      }
      make_parent(options.config_path);
      ks::write_file_atomically(options.config_path, proposal.toml);
      out["written"] = true;
    } catch (const ks::Error& e) {
      refusal = e.what();
      if (::geteuid() != 0) refusal += " (run as root)";
    }
  }
  if (!backup.empty()) out["backup"] = backup;
  if (!refusal.empty()) out["error"] = refusal;
  if (options.json) {
    std::cout << json_text(out) << "\n";
  } else if (!refusal.empty()) {
    std::fprintf(stderr, "ksctl: setup: %s\n", refusal.c_str());
  } else if (out.value("unchanged", false)) {
    std::printf("\n%s already holds this configuration: nothing written.\n",
                options.config_path.c_str());
  } else {
    std::printf("\nWrote %s%s.\n", options.config_path.c_str(),
                backup.empty() ? "" : (" (the old one is kept as " + backup + ")").c_str());
    std::printf("Check it: ksd --check --config %s\n", options.config_path.c_str());
    std::printf("Apply it: ksctl reload (ksd running), or start ksd\n");
  }
  return refusal.empty() ? kOk : kFailed;
}

}  // namespace ksctl
