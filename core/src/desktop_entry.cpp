#include "killswitch/desktop_entry.hpp"

#include <algorithm>

#include "killswitch/error.hpp"

namespace ks::desktop {
namespace {

constexpr std::string_view kBlanks = " \t";

std::string_view trim(std::string_view s) {
  auto b = s.find_first_not_of(kBlanks);
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(kBlanks);
  return s.substr(b, e - b + 1);
}

bool key_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';  // '_' is not in the specification, but common in X- keys of real files
}

bool locale_char(char c) { return key_char(c) || c == '@' || c == '.'; }

// KEY or KEY[LOCALE].
bool valid_key(std::string_view key) {
  auto bracket = key.find('[');
  std::string_view name = key.substr(0, bracket);
  if (name.empty() || !std::all_of(name.begin(), name.end(), key_char)) return false;
  if (bracket == std::string_view::npos) return true;
  std::string_view locale = key.substr(bracket + 1);
  if (locale.size() < 2 || locale.back() != ']') return false;
  locale.remove_suffix(1);
  return std::all_of(locale.begin(), locale.end(), locale_char);
}

bool valid_group_name(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f && c != '[' && c != ']';
  });
}

// Characters that put an Exec argument in quotes (section "The Exec key").
bool reserved(char c) {
  return std::string_view(" \t\n\"'\\><~|&;$*?#()`").find(c) != std::string_view::npos;
}

Group* find_group(std::vector<Group>& groups, std::string_view name) {
  for (auto& g : groups)
    if (g.name == name) return &g;
  return nullptr;
}

}  // namespace

Entry Entry::parse(std::string_view text) {
  if (text.size() > kMaxFileSize) throw Error("the desktop file is larger than 1 MiB");
  Entry entry;
  std::size_t number = 0;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::string where = "line " + std::to_string(number) + ": ";
    // Control characters are not allowed in values (the specification) nor anywhere else:
    // they would not survive being written back (a CR before the line end is read as CRLF).
    if (std::any_of(line.begin(), line.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x20 && c != '\t'; }))
      throw Error(where + "a control character");
    std::string_view t = trim(line);
    if (t.empty() || t.front() == '#') {
      if (entry.groups_.empty())
        entry.preamble_.emplace_back(line);
      else
        entry.groups_.back().lines.push_back({{}, {}, std::string(line)});
      continue;
    }
    if (t.front() == '[') {
      if (t.back() != ']') throw Error(where + "a group header without ']'");
      std::string_view name = t.substr(1, t.size() - 2);
      if (!valid_group_name(name)) throw Error(where + "a bad group name");
      if (find_group(entry.groups_, name))
        throw Error(where + "the group [" + std::string(name) + "] twice");
      if (entry.groups_.empty() && name != kMainGroup)
        throw Error(where + "the first group is not [Desktop Entry]");
      entry.groups_.push_back({std::string(name), {}});
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string_view::npos)
      throw Error(where + "neither a group, a key=value nor a comment");
    if (entry.groups_.empty()) throw Error(where + "a key before the first group");
    std::string_view key = trim(line.substr(0, eq));
    if (!valid_key(key)) throw Error(where + "a bad key name");
    Group& g = entry.groups_.back();
    for (const auto& l : g.lines)
      if (l.key == key) throw Error(where + "the key " + std::string(key) + " twice in a group");
    // Blanks after '=' are not part of the value; trailing ones are (a "\s" would be
    // needed to keep them in an unescaped view, but the raw value is kept verbatim).
    std::string_view value = line.substr(eq + 1);
    value.remove_prefix(std::min(value.find_first_not_of(kBlanks), value.size()));
    g.lines.push_back({std::string(key), std::string(value), {}});
  }
  if (entry.groups_.empty()) throw Error("no [Desktop Entry] group");
  return entry;
}

std::string Entry::text() const {
  std::string out;
  for (const auto& p : preamble_) out += p + "\n";
  for (const auto& g : groups_) {
    out += "[" + g.name + "]\n";
    for (const auto& l : g.lines)
      out += l.key.empty() ? l.raw + "\n" : l.key + "=" + l.value + "\n";
  }
  return out;
}

std::optional<std::string> Entry::raw(std::string_view group, std::string_view key) const {
  for (const auto& g : groups_) {
    if (g.name != group) continue;
    for (const auto& l : g.lines)
      if (!l.key.empty() && l.key == key) return l.value;
  }
  return std::nullopt;
}

std::optional<std::string> Entry::string(std::string_view group, std::string_view key) const {
  auto r = raw(group, key);
  if (!r) return std::nullopt;
  return unescape_string(*r);
}

void Entry::set_raw(std::string_view group, std::string_view key, std::string_view raw_value) {
  if (raw_value.find('\n') != std::string_view::npos) throw Error("a raw value with a newline");
  Group* g = find_group(groups_, group);
  if (!g) {
    groups_.push_back({std::string(group), {}});
    g = &groups_.back();
  }
  for (auto& l : g->lines)
    if (l.key == key) {
      l.value = raw_value;
      return;
    }
  // After the last key, so that comments trailing the group stay where they were.
  auto last_key = std::find_if(g->lines.rbegin(), g->lines.rend(),
                               [](const Line& l) { return !l.key.empty(); });
  g->lines.insert(last_key.base(), {std::string(key), std::string(raw_value), {}});
}

bool Entry::has_group(std::string_view group) const {
  return std::any_of(groups_.begin(), groups_.end(),
                     [&](const Group& g) { return g.name == group; });
}

std::string escape_string(std::string_view value) {
  std::string out;
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        out += c;
    }
  }
  // Leading blanks would be dropped when read back.
  if (!out.empty() && out.front() == ' ') out.replace(0, 1, "\\s");
  return out;
}

std::string unescape_string(std::string_view raw) {
  std::string out;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\\') {
      out += raw[i];
      continue;
    }
    if (++i == raw.size()) throw Error("a value ends in a backslash");
    switch (raw[i]) {
      case 's':
        out += ' ';
        break;
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case '\\':
        out += '\\';
        break;
      // Unknown escapes are kept as written: list separators ("\;") are resolved by
      // whoever splits the list, and real files carry others that launchers pass through.
      default:
        out += '\\';
        out += raw[i];
    }
  }
  return out;
}

std::vector<std::string> split_exec(std::string_view exec) {
  std::vector<std::string> args;
  std::size_t i = 0;
  while (true) {
    while (i < exec.size() && (exec[i] == ' ' || exec[i] == '\t')) ++i;
    if (i == exec.size()) break;
    std::string arg;
    if (exec[i] == '"') {
      ++i;
      bool closed = false;
      while (i < exec.size()) {
        char c = exec[i++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\') {
          if (i == exec.size()) break;
          char n = exec[i++];
          if (n != '"' && n != '`' && n != '$' && n != '\\')
            throw Error("Exec: a backslash in quotes before '" + std::string(1, n) + "'");
          c = n;
        }
        arg += c;
      }
      if (!closed) throw Error("Exec: an unterminated quote");
      if (i < exec.size() && exec[i] != ' ' && exec[i] != '\t')
        throw Error("Exec: a quoted argument runs into the next one");
    } else {
      while (i < exec.size() && exec[i] != ' ' && exec[i] != '\t') {
        if (exec[i] == '"') throw Error("Exec: a quote inside an unquoted argument");
        arg += exec[i++];
      }
    }
    args.push_back(std::move(arg));
  }
  if (args.empty()) throw Error("Exec is empty");
  return args;
}

std::string quote_exec_arg(std::string_view arg) {
  std::string body;
  bool quote = arg.empty();
  for (char c : arg) {
    if (reserved(c)) quote = true;
    if (c == '%')
      body += "%%";
    else if (c == '"' || c == '`' || c == '$' || c == '\\')
      body += std::string("\\") + c;
    else
      body += c;
  }
  if (!quote) {
    // Without quotes, nothing was escaped but '%'.
    std::string plain;
    for (char c : arg) plain += c == '%' ? std::string("%%") : std::string(1, c);
    return plain;
  }
  return "\"" + body + "\"";
}

std::string protected_exec(std::string_view raw_exec, std::string_view ksrun,
                           std::string_view profile) {
  split_exec(unescape_string(raw_exec));  // refuses a line the launcher could not parse either
  std::string prefix = quote_exec_arg(ksrun) + " --profile " + quote_exec_arg(profile) + " --";
  std::string original(raw_exec);
  // A leading "\s" would read as part of the value; the separator is a plain space.
  return escape_string(prefix) + " " + original;
}

Entry make_protected(const Entry& original, std::string_view original_path, std::string_view ksrun,
                     std::string_view profile) {
  if (ksrun.empty() || ksrun.front() != '/') throw Error("the path of ksrun must be absolute");
  // What a desktop file cannot hold, even escaped.
  for (std::string_view s : {original_path, ksrun, profile})
    if (std::any_of(s.begin(), s.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x20; }))
      throw Error("a control character in a path or the profile");
  if (marker_of(original)) throw Error("the entry is already an override written by ksctl");
  auto type = original.string(kMainGroup, "Type");
  if (type.value_or("Application") != "Application")
    throw Error("the entry is of Type=" + *type + ", not an application");
  auto exec = original.raw(kMainGroup, "Exec");
  if (!exec) throw Error("the entry has no Exec line (D-Bus activation only cannot be protected)");
  Entry out = original;
  out.preamble_.insert(
      out.preamble_.begin(),
      {"# Written by `ksctl desktop protect`: starts the application through "
       "ksrun.",
       "# `ksctl desktop unprotect` removes it (the original stays where it was)."});
  out.set_raw(kMainGroup, "Exec", protected_exec(*exec, ksrun, profile));
  for (auto& g : out.groups_) {
    if (g.name.rfind("Desktop Action ", 0) != 0) continue;
    if (auto action_exec = original.raw(g.name, "Exec"))
      out.set_raw(g.name, "Exec", protected_exec(*action_exec, ksrun, profile));
  }
  out.set_raw(kMainGroup, "DBusActivatable", "false");
  out.set_raw(kMainGroup, kMarkerKey, "true");
  out.set_raw(kMainGroup, kOriginalKey, escape_string(original_path));
  out.set_raw(kMainGroup, kProfileKey, escape_string(profile));
  return out;
}

std::optional<Marker> marker_of(const Entry& entry) {
  if (entry.raw(kMainGroup, kMarkerKey) != "true") return std::nullopt;
  Marker m;
  try {
    m.original_path = entry.string(kMainGroup, kOriginalKey).value_or("");
    m.profile = entry.string(kMainGroup, kProfileKey).value_or("");
  } catch (const Error&) {
    // Still ours (the marker says so), with an unreadable note.
  }
  return m;
}

std::string file_id(std::string_view relative) {
  constexpr std::string_view kSuffix = ".desktop";
  if (relative.size() <= kSuffix.size() ||
      relative.substr(relative.size() - kSuffix.size()) != kSuffix)
    return {};
  std::string id(relative);
  std::replace(id.begin(), id.end(), '/', '-');
  return id;
}

}  // namespace ks::desktop
