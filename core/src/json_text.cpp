#include "killswitch/json_text.hpp"

#include <charconv>

namespace ks {
namespace {

// At s[i], a byte of 0x80 or more: how many bytes a valid UTF-8 sequence there has
// (`valid`), or else how many bytes its longest valid beginning has (`invalid`, at least
// 1): the "maximal subpart" that becomes one U+FFFD (Unicode's recommended practice, and
// what nlohmann-json's replace does). Overlong forms, surrogates and code points above
// U+10FFFF are not valid (RFC 3629).
struct Utf8Scan {
  std::size_t valid = 0;
  std::size_t invalid = 0;
};
Utf8Scan scan_utf8(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  std::size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong three-byte forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlong four-byte forms
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {0, 1};
  }
  for (std::size_t k = 1; k < len; ++k) {
    const bool ok = i + k < s.size() && byte(i + k) >= (k == 1 ? lo : 0x80) &&
                    byte(i + k) <= (k == 1 ? hi : 0xBF);
    if (!ok) return {0, k};
  }
  return {len, 0};
}

void append_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  // Characters that stand for themselves go over a run at a time (a byte at a time was a
  // third of the CPU time of a 10,000-app list).
  const auto plain = [](unsigned char c) { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\'; };
  for (std::size_t i = 0; i < s.size();) {
    std::size_t run = i;
    while (run < s.size() && plain(static_cast<unsigned char>(s[run]))) ++run;
    if (run > i) {
      out.append(s.data() + i, run - i);
      i = run;
      continue;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const Utf8Scan scan = scan_utf8(s, i);
      if (scan.valid) {
        out.append(s.substr(i, scan.valid));
        i += scan.valid;
      } else {
        out += "\xEF\xBF\xBD";  // U+FFFD for the bytes that begin no valid sequence
        i += scan.invalid;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
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
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        out += "\\u00";  // (the other control characters: plain ones went as a run)
        out += kHex[c >> 4];
        out += kHex[c & 0xF];
    }
    ++i;
  }
  out += '"';
}

template <typename Int>
void append_number(std::string& out, Int number) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), number);
  (void)ec;  // 24 characters hold any 64-bit integer
  out.append(buf, end);
}

}  // namespace

JsonText& JsonText::begin_object() {
  separate();
  out_ += '{';
  return *this;
}

JsonText& JsonText::end_object() {
  out_ += '}';
  need_comma_ = true;
  return *this;
}

JsonText& JsonText::begin_array() {
  separate();
  out_ += '[';
  return *this;
}

JsonText& JsonText::end_array() {
  out_ += ']';
  need_comma_ = true;
  return *this;
}

JsonText& JsonText::key(std::string_view name) {
  separate();
  append_string(out_, name);
  out_ += ':';
  return *this;
}

JsonText& JsonText::value(std::string_view text) {
  separate();
  append_string(out_, text);
  need_comma_ = true;
  return *this;
}

JsonText& JsonText::value(std::uint64_t number) {
  separate();
  append_number(out_, number);
  need_comma_ = true;
  return *this;
}

JsonText& JsonText::value(std::int64_t number) {
  separate();
  append_number(out_, number);
  need_comma_ = true;
  return *this;
}

JsonText& JsonText::value(bool flag) {
  separate();
  out_ += flag ? "true" : "false";
  need_comma_ = true;
  return *this;
}

JsonText& JsonText::raw(std::string_view json) {
  separate();
  out_.append(json);
  need_comma_ = true;
  return *this;
}

JsonText& JsonText::counters(const Counters& c) {
  begin_object();
  for_each_counter(c, [this](const char* name, std::uint64_t v) { member(name, v); });
  return end_object();
}

std::string json_string(std::string_view text) {
  std::string out;
  append_string(out, text);
  return out;
}

std::string valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      out += text[i++];
      continue;
    }
    const Utf8Scan scan = scan_utf8(text, i);
    if (scan.valid) {
      out.append(text.substr(i, scan.valid));
      i += scan.valid;
    } else {
      out += "\xEF\xBF\xBD";
      i += scan.invalid;
    }
  }
  return out;
}

}  // namespace ks
