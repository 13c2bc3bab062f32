#include "killswitch/json_text.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "killswitch/ipc.hpp"

namespace {

std::string one_string(std::string_view s) {
  std::string out;
  ks::JsonText(out).value(s);
  return out;
}

TEST(JsonText, PlacesCommasInObjectsAndArrays) {
  std::string out;
  ks::JsonText w(out);
  w.begin_object().member("a", std::uint64_t{1}).key("b").begin_array();
  w.value(true).value(false).begin_object().end_object().begin_array().end_array();
  w.end_array().member("c", "x").member("d", std::int64_t{-5}).end_object();
  EXPECT_EQ(out, R"({"a":1,"b":[true,false,{},[]],"c":"x","d":-5})");
  EXPECT_TRUE(nlohmann::json::accept(out));
}

// A reply made in parts (ksd's list, streamed): each part's writer continues where the last
// one stopped, commas included, and the whole is what one writer would have written.
TEST(JsonText, ContinuesTextAnotherWriterBegan) {
  std::string whole, parts;
  ks::JsonText one(whole);
  one.begin_object().key("apps").begin_array();
  for (int i = 0; i < 5; ++i) one.begin_object().member("n", std::int64_t{i}).end_object();
  one.end_array().end_object();

  bool after_value = false;
  for (int part = 0; part < 4; ++part) {
    ks::JsonText w(parts, after_value);
    if (part == 0) w.begin_object().key("apps").begin_array();
    if (part == 1 || part == 2)
      for (int i = part == 1 ? 0 : 3; i < (part == 1 ? 3 : 5); ++i)
        w.begin_object().member("n", std::int64_t{i}).end_object();
    if (part == 3) w.end_array().end_object();
    after_value = w.after_value();
  }
  EXPECT_EQ(parts, whole);
  EXPECT_TRUE(nlohmann::json::accept(parts));
}

TEST(JsonText, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(one_string("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(one_string("\n\t\r\b\f"), R"("\n\t\r\b\f")");
  EXPECT_EQ(one_string(std::string("\x01\x1f\x7f", 3)), "\"\\u0001\\u001f\x7f\"");
  EXPECT_EQ(one_string(std::string("a\0b", 3)), R"("a\u0000b")");
  // Every byte value below 0x80 survives a round trip through a JSON parser.
  std::string all;
  for (int c = 0; c < 0x80; ++c) all += static_cast<char>(c);
  EXPECT_EQ(nlohmann::json::parse(one_string(all)).get<std::string>(), all);
}

TEST(JsonText, KeepsValidUtf8AndReplacesWhatIsNot) {
  const std::string valid = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x94\x92";  // é € 🔒
  EXPECT_EQ(one_string(valid), "\"" + valid + "\"");
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(one_string("a\xFF"
                       "b"),
            "\"a" + fffd + "b\"");                                          // never valid
  EXPECT_EQ(one_string("\xC3"), "\"" + fffd + "\"");                        // cut short
  EXPECT_EQ(one_string("\xC0\xAF"), "\"" + fffd + fffd + "\"");             // overlong '/'
  EXPECT_EQ(one_string("\xED\xA0\x80"), "\"" + fffd + fffd + fffd + "\"");  // surrogate
  EXPECT_EQ(one_string("\xF4\x90\x80\x80"), "\"" + fffd + fffd + fffd + fffd + "\"");
  // A sequence cut short by a byte that cannot continue it: one U+FFFD for its beginning.
  EXPECT_EQ(one_string("\xED\x80\xC0\xAF"), "\"" + fffd + fffd + fffd + "\"");
  EXPECT_EQ(one_string("\xE2\x82"), "\"" + fffd + "\"");
  // Whatever the bytes, the text is valid JSON, as strict as nlohmann's parser.
  std::string noise;
  for (int i = 0; i < 4096; ++i) noise += static_cast<char>((i * 7919 + 13) & 0xFF);
  EXPECT_TRUE(nlohmann::json::accept(one_string(noise)));
}

TEST(JsonText, WritesWhatTheJsonLibraryWritesForTheSameValue) {
  // ksctl reads both kinds of reply: the two writers must agree, invalid UTF-8 included.
  for (const std::string& s :
       {std::string("plain"), std::string("a\"\\\n\x01"), std::string("\xE2\x82\xAC"),
        std::string("x\xFFy"), std::string("\xC3")})
    EXPECT_EQ(one_string(s), ks::ipc::message_text(nlohmann::json(s))) << s;
}

TEST(JsonText, WritesEveryCounterOnce) {
  ks::Counters c;
  c.allowed_packets = 1;
  c.allowed_bytes = 2;
  c.blocked_packets = 3;
  c.blocked_bytes = 4;
  c.blocked_connects = 5;
  c.events_dropped = 6;
  std::string out;
  ks::JsonText(out).counters(c);
  EXPECT_EQ(nlohmann::json::parse(out), nlohmann::json({{"allowed_packets", 1},
                                                        {"allowed_bytes", 2},
                                                        {"blocked_packets", 3},
                                                        {"blocked_bytes", 4},
                                                        {"blocked_connects", 5},
                                                        {"blocked", 8},
                                                        {"events_dropped", 6}}));
}

TEST(JsonText, WritesBigListsAndExtremeNumbers) {
  std::string out;
  ks::JsonText w(out);
  w.begin_array();
  for (std::uint64_t i = 0; i < 100000; ++i) w.value(i);
  w.value(UINT64_MAX).value(INT64_MIN).end_array();
  const auto parsed = nlohmann::json::parse(out);
  ASSERT_EQ(parsed.size(), 100002u);
  EXPECT_EQ(parsed[99999].get<std::uint64_t>(), 99999u);
  EXPECT_EQ(parsed[100000].get<std::uint64_t>(), UINT64_MAX);
  EXPECT_EQ(parsed[100001].get<std::int64_t>(), INT64_MIN);
}

}  // namespace
