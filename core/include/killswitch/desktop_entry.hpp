// Desktop entries (the freedesktop.org Desktop Entry Specification, version 1.5) for
// `ksctl desktop`: parsing, writing back unchanged what is not rewritten, the Exec quoting
// rules, and the protected override that runs an application through ksrun.
//
// Desktop files are untrusted input (any package, any user's download), so the parser
// refuses what the specification forbids instead of guessing (fuzz/fuzz_desktop_entry.cpp).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ks::desktop {

inline constexpr std::string_view kMainGroup = "Desktop Entry";
// Marker keys of an override ksctl wrote: unprotect removes only files that carry them.
inline constexpr std::string_view kMarkerKey = "X-Killswitch-Protected";
inline constexpr std::string_view kOriginalKey = "X-Killswitch-Original";
inline constexpr std::string_view kProfileKey = "X-Killswitch-Profile";
// Larger files are refused before parsing (real ones are a few KiB, with translations ~100).
inline constexpr std::size_t kMaxFileSize = 1 << 20;

// One line of a group: a key=value pair, or a comment or blank line kept as it was.
struct Line {
  std::string key;    // with its locale, "Name[de]"; empty for comments and blank lines
  std::string value;  // as written (escapes not resolved)
  std::string raw;    // comments and blank lines
};

struct Group {
  std::string name;
  std::vector<Line> lines;
};

class Entry;
Entry make_protected(const Entry& original, std::string_view original_path, std::string_view ksrun,
                     std::string_view profile);

class Entry {
 public:
  // Throws ks::Error on what the specification forbids: a key outside a group, a first
  // group other than [Desktop Entry], duplicate groups or keys, bad key names,
  // control characters (CR only as part of a CRLF line end).
  static Entry parse(std::string_view text);
  std::string text() const;

  // The raw value of KEY in GROUP (escapes not resolved), if present.
  std::optional<std::string> raw(std::string_view group, std::string_view key) const;
  // The value of a string key with its escapes resolved (\s \n \t \r \\).
  std::optional<std::string> string(std::string_view group, std::string_view key) const;
  // Sets (or appends) KEY in GROUP to an already escaped value.
  void set_raw(std::string_view group, std::string_view key, std::string_view raw_value);
  bool has_group(std::string_view group) const;
  const std::vector<Group>& groups() const { return groups_; }

 private:
  friend Entry make_protected(const Entry&, std::string_view, std::string_view, std::string_view);
  std::vector<std::string> preamble_;  // comments and blank lines before the first group
  std::vector<Group> groups_;
};

// String escapes of the specification (section "Possible value types").
std::string escape_string(std::string_view value);
std::string unescape_string(std::string_view raw);  // throws on a trailing backslash

// The Exec key's arguments (after string unescaping), quoting rules applied; field codes
// stay as written ("%U"). Throws ks::Error on an unterminated quote or a bad escape.
std::vector<std::string> split_exec(std::string_view exec);
// One argument quoted for an Exec line (before string escaping): reserved characters put
// it in double quotes, '%' is doubled so it is not taken for a field code.
std::string quote_exec_arg(std::string_view arg);

// The raw Exec value that runs RAW_EXEC's command through ksrun with PROFILE:
// "KSRUN --profile PROFILE -- <original>". The original is checked with split_exec and kept
// as written, field codes and all, so the launcher expands them as before.
std::string protected_exec(std::string_view raw_exec, std::string_view ksrun,
                           std::string_view profile);

// The override of ORIGINAL (read from ORIGINAL_PATH) that starts it protected: every Exec
// (the main group and each [Desktop Action ...]) through ksrun, DBusActivatable=false
// (activation would start the program from its D-Bus service file, without Exec), and the
// marker keys. Throws ks::Error when ORIGINAL is not an application with an Exec line, is
// itself an override written by ksctl, or KSRUN is not an absolute path.
Entry make_protected(const Entry& original, std::string_view original_path, std::string_view ksrun,
                     std::string_view profile);

// What the marker keys of an override say, if it is one of ksctl's.
struct Marker {
  std::string original_path;
  std::string profile;
};
std::optional<Marker> marker_of(const Entry& entry);

// The desktop file id of a file at RELATIVE (to an applications/ directory): "/" becomes
// "-" ("kde4/foo.desktop" -> "kde4-foo.desktop"). Empty when it is not a .desktop file.
std::string file_id(std::string_view relative);

}  // namespace ks::desktop
