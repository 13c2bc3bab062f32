// JSON text written straight into a string: the one writer of ksd's replies (status,
// list, events). `ksctl list` with 10,000 apps is about 4 MB of JSON, and building a
// nlohmann::json tree first cost more than reading every app's cgroup.procs
// (docs/benchmarks.md). Commas are placed by the writer; keys are written as given.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "killswitch/counters.hpp"

namespace ks {

class JsonText {
 public:
  explicit JsonText(std::string& out) : out_(out) {}
  // Continues text another writer began (a reply made in parts): after_value when the
  // text so far ends in a value of the array or object still open, so the next one needs
  // a comma. after_value() tells the next writer.
  JsonText(std::string& out, bool after_value) : out_(out), need_comma_(after_value) {}
  bool after_value() const { return need_comma_; }

  JsonText& begin_object();
  JsonText& end_object();
  JsonText& begin_array();
  JsonText& end_array();
  // A member's name; the next call writes its value.
  JsonText& key(std::string_view name);

  // Strings from the system need not be UTF-8 (a command line, a task name): what is not
  // valid UTF-8 is written as U+FFFD (one per maximal invalid subpart, as nlohmann-json
  // does); control characters are escaped.
  JsonText& value(std::string_view text);
  JsonText& value(const char* text) { return value(std::string_view(text)); }
  JsonText& value(const std::string& text) { return value(std::string_view(text)); }
  JsonText& value(std::uint64_t number);
  JsonText& value(std::int64_t number);
  JsonText& value(std::uint32_t number) { return value(static_cast<std::uint64_t>(number)); }
  JsonText& value(std::int32_t number) { return value(static_cast<std::int64_t>(number)); }
  JsonText& value(bool flag);
  // A value that is JSON text already (an event rendered when it was recorded).
  JsonText& raw(std::string_view json);

  // key(name).value(v) in one call.
  template <typename T>
  JsonText& member(std::string_view name, const T& v) {
    return key(name).value(v);
  }
  // The counters' object, fields as for_each_counter() lists them.
  JsonText& counters(const Counters& c);

 private:
  void separate() {
    if (need_comma_) out_ += ',';
    need_comma_ = false;
  }
  std::string& out_;
  bool need_comma_ = false;
};

// `text` as one JSON string (quotes included), as JsonText::value writes it.
std::string json_string(std::string_view text);

// `text` with what is not valid UTF-8 replaced as JsonText::value replaces it (one U+FFFD
// per maximal invalid subpart), nothing else changed: for other text formats (metrics).
std::string valid_utf8(std::string_view text);

}  // namespace ks
