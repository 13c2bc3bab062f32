// ksctl desktop protect|unprotect|list: an application started from the desktop's menu runs
// through ksrun. The override is a desktop entry of the same file id in the user's own
// $XDG_DATA_HOME/applications, which launchers prefer to the system's (Desktop Entry and
// Base Directory specifications); it carries marker keys, so that unprotect removes only
// files ksctl wrote and protect never replaces a user's own override.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "commands.hpp"
#include "killswitch/config.hpp"
#include "killswitch/desktop_entry.hpp"
#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"
#include "output.hpp"

namespace fs = std::filesystem;

namespace ksctl {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

std::string data_home() {
  // A relative $XDG_DATA_HOME is invalid (Base Directory specification): the default then.
  const char* xdg = std::getenv("XDG_DATA_HOME");
  if (xdg && xdg[0] == '/') return xdg;
  std::string home = env_or("HOME", "");
  if (home.empty() || home.front() != '/')
    throw ks::Error("neither $XDG_DATA_HOME nor $HOME is an absolute path");
  return home + "/.local/share";
}

std::vector<std::string> data_dirs() {
  std::vector<std::string> dirs;
  std::stringstream in(env_or("XDG_DATA_DIRS", "/usr/local/share:/usr/share"));
  std::string d;
  // Relative entries are invalid by the Base Directory specification.
  while (std::getline(in, d, ':'))
    if (!d.empty() && d.front() == '/') dirs.push_back(d);
  return dirs;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ks::Error("cannot read " + path.string());
  std::string text(ks::desktop::kMaxFileSize + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > ks::desktop::kMaxFileSize)
    throw ks::Error(path.string() + " is larger than 1 MiB");
  return text;
}

ks::desktop::Entry read_entry(const fs::path& path) {
  try {
    return ks::desktop::Entry::parse(read_file(path));
  } catch (const ks::Error& e) {
    throw ks::Error(path.string() + ": " + e.what());
  }
}

// The desktop files of one applications/ directory, by file id.
std::map<std::string, fs::path> entries_in(const fs::path& dir) {
  std::map<std::string, fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    std::string id = ks::desktop::file_id(fs::relative(it->path(), dir, ec).string());
    if (!id.empty()) out.emplace(id, it->path());
  }
  return out;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Does APP name this file id? The id itself (with or without ".desktop"), or, ignoring
// case, its last dot-separated part ("qbittorrent" for org.qbittorrent.qBittorrent).
bool names(const std::string& app, const std::string& id) {
  std::string stem = id.substr(0, id.size() - 8);
  if (app == id || app == stem) return true;
  return lower(stem.substr(stem.find_last_of('.') + 1)) == lower(app);
}

struct Found {
  std::string id;
  fs::path user;    // in $XDG_DATA_HOME/applications, if there is one
  fs::path system;  // the first in $XDG_DATA_DIRS, if there is one
};

Found find_app(const std::string& app) {
  std::map<std::string, Found> matches;
  for (const auto& [id, path] : entries_in(fs::path(data_home()) / "applications"))
    if (names(app, id)) matches[id] = {id, path, {}};
  for (const auto& dir : data_dirs())
    for (const auto& [id, path] : entries_in(fs::path(dir) / "applications"))
      if (names(app, id) && matches[id].system.empty()) {
        matches[id].id = id;
        matches[id].system = path;
      }
  if (matches.empty())
    throw ks::Error("no desktop entry named " + app + " in $XDG_DATA_HOME or $XDG_DATA_DIRS");
  // An exact id wins over a loose name.
  for (const auto& [id, f] : matches)
    if (app == id || app + ".desktop" == id) return f;
  if (matches.size() > 1) {
    std::string ids;
    for (const auto& [id, f] : matches) ids += " " + id;
    throw ks::Error(app + " names more than one desktop entry; say which:" + ids);
  }
  return matches.begin()->second;
}

// Next to this ksctl (the installed pair, or a build directory), else on $PATH.
std::string find_ksrun() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && ::access((self.parent_path() / "ksrun").c_str(), X_OK) == 0)
    return (self.parent_path() / "ksrun").string();
  std::stringstream in(env_or("PATH", "/usr/bin:/bin"));
  std::string d;
  while (std::getline(in, d, ':'))
    if (!d.empty() && d.front() == '/' && ::access((fs::path(d) / "ksrun").c_str(), X_OK) == 0)
      return (fs::path(d) / "ksrun").string();
  throw ks::Error("cannot find ksrun (next to ksctl or on $PATH); name it with --ksrun");
}

// Written whole or not at all: a launcher reading the directory never sees half a file.
void write_atomically(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  fs::path tmp = path;
  tmp += ".ksctl-tmp";
  {
    ks::UniqueFd fd(
        ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd) ks::throw_errno("cannot write " + tmp.string());
    std::size_t done = 0;
    while (done < text.size()) {
      ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        ks::throw_errno("cannot write " + tmp.string(), err);
      }
      done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd.get()) != 0) ks::throw_errno("cannot write " + tmp.string());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    ks::throw_errno("cannot write " + path.string(), err);
  }
}

int protect(const DesktopOptions& o) {
  if (!ks::is_valid_profile_name(o.profile)) {
    std::fprintf(stderr, "ksctl: bad profile name %s\n", o.profile.c_str());
    return kUsage;
  }
  Found f = find_app(o.app);
  fs::path target = fs::path(data_home()) / "applications" / f.id;
  fs::path source = f.system;
  if (!f.user.empty()) {
    auto marker = ks::desktop::marker_of(read_entry(f.user));
    if (!marker) {
      std::fprintf(stderr,
                   "ksctl: %s is your own desktop entry (not written by ksctl); it is left as "
                   "it is. Put \"%s --profile %s --\" in front of its Exec lines yourself, or "
                   "remove it and protect the system's entry\n",
                   f.user.c_str(), o.ksrun.empty() ? "ksrun" : o.ksrun.c_str(), o.profile.c_str());
      return kFailed;
    }
    // Already protected: written again from the original (a new profile, a new ksrun, or
    // an original the package has updated since).
    if (!marker->original_path.empty()) source = marker->original_path;
    target = f.user;
  }
  if (source.empty() || !fs::exists(source)) {
    std::fprintf(stderr, "ksctl: the original desktop entry of %s is gone\n", f.id.c_str());
    return kFailed;
  }
  std::string ksrun = o.ksrun.empty() ? find_ksrun() : o.ksrun;
  ks::desktop::Entry out =
      ks::desktop::make_protected(read_entry(source), source.string(), ksrun, o.profile);
  write_atomically(target, out.text());
  if (o.json) {
    std::cout << json_text({{"id", f.id},
                            {"file", target.string()},
                            {"original", source.string()},
                            {"profile", o.profile},
                            {"ksrun", ksrun}})
              << "\n";
  } else {
    std::printf("%s now starts through ksrun (profile %s): %s\n", f.id.c_str(), o.profile.c_str(),
                target.c_str());
  }
  return kOk;
}

int unprotect(const DesktopOptions& o) {
  Found f = find_app(o.app);
  if (f.user.empty()) {
    std::fprintf(stderr, "ksctl: %s is not protected (no override in %s/applications)\n",
                 f.id.c_str(), data_home().c_str());
    return kFailed;
  }
  if (!ks::desktop::marker_of(read_entry(f.user))) {
    std::fprintf(stderr, "ksctl: %s was not written by ksctl; it is left as it is\n",
                 f.user.c_str());
    return kFailed;
  }
  if (::unlink(f.user.c_str()) != 0) ks::throw_errno("cannot remove " + f.user.string());
  if (o.json)
    std::cout << json_text({{"id", f.id}, {"removed", f.user.string()}}) << "\n";
  else
    std::printf("%s starts unprotected again (removed %s)\n", f.id.c_str(), f.user.c_str());
  return kOk;
}

int list(const DesktopOptions& o) {
  nlohmann::json entries = nlohmann::json::array();
  for (const auto& [id, path] : entries_in(fs::path(data_home()) / "applications")) {
    std::optional<ks::desktop::Marker> marker;
    try {
      marker = ks::desktop::marker_of(read_entry(path));
    } catch (const ks::Error&) {
      continue;  // not one of ours if ksctl cannot read it
    }
    if (!marker) continue;
    std::error_code ec;
    entries.push_back({{"id", id},
                       {"file", path.string()},
                       {"profile", marker->profile},
                       {"original", marker->original_path},
                       {"original_exists", fs::exists(marker->original_path, ec)}});
  }
  if (o.json) {
    std::cout << json_text({{"entries", entries}}) << "\n";
    return kOk;
  }
  if (entries.empty()) {
    std::printf("no desktop entries protected\n");
    return kOk;
  }
  Table table({"ID", "PROFILE", "ORIGINAL"});
  for (const auto& e : entries) {
    std::string original = e["original"].get<std::string>();
    // (append, not `+= " " + ...`: GCC 12 at -O3 warns about that temporary, -Wrestrict)
    if (!e["original_exists"].get<bool>())
      original.append(" ").append(yellow("(gone: unprotect it)"));
    table.row({e["id"].get<std::string>(), e["profile"].get<std::string>(), original});
  }
  table.print();
  return kOk;
}

}  // namespace

int desktop_command(const DesktopOptions& options) {
  // Menus are per user: under sudo this would change root's menu, not the caller's.
  if (::geteuid() == 0 && std::getenv("SUDO_USER") && options.action != "list")
    std::fprintf(stderr,
                 "ksctl: note: running as root changes root's own menu entries; run ksctl "
                 "desktop as %s instead\n",
                 std::getenv("SUDO_USER"));
  try {
    if (options.action == "protect") return protect(options);
    if (options.action == "unprotect") return unprotect(options);
    return list(options);
  } catch (const ks::Error& e) {
    std::fprintf(stderr, "ksctl: %s\n", e.what());
    return kFailed;
  } catch (const fs::filesystem_error& e) {
    std::fprintf(stderr, "ksctl: %s\n", e.what());
    return kFailed;
  }
}

}  // namespace ksctl
