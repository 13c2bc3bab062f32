// The pure half of `ksctl desktop`: desktop entries parsed and written back, the Exec
// quoting rules, the protected override and its marker.
#include "killswitch/desktop_entry.hpp"

#include <gtest/gtest.h>

#include "killswitch/error.hpp"

namespace dt = ks::desktop;

namespace {

const char* kQbittorrent = R"(# A translated, real-world shaped entry.
[Desktop Entry]
Categories=Network;FileTransfer;P2P;Qt;
Exec=qbittorrent %U
GenericName=BitTorrent client
GenericName[de]=BitTorrent-Client
Comment=Download and share files over BitTorrent
Icon=qbittorrent
MimeType=application/x-bittorrent;x-scheme-handler/magnet;
Name=qBittorrent
Name[sr@latin]=qBittorrent
Terminal=false
Type=Application
TryExec=qbittorrent
StartupWMClass=qbittorrent
Keywords=bittorrent;torrent;magnet;download;p2p;
Actions=new-window;

[Desktop Action new-window]
Name=New window
Exec=qbittorrent --new-window "file with space" %f
)";

}  // namespace

TEST(DesktopEntry, RoundTripsUnchanged) {
  auto e = dt::Entry::parse(kQbittorrent);
  EXPECT_EQ(e.text(), kQbittorrent);
  EXPECT_EQ(e.raw("Desktop Entry", "Exec"), "qbittorrent %U");
  EXPECT_EQ(e.raw("Desktop Entry", "Name[sr@latin]"), "qBittorrent");
  EXPECT_EQ(e.raw("Desktop Action new-window", "Name"), "New window");
  EXPECT_FALSE(e.raw("Desktop Entry", "Nope"));
}

TEST(DesktopEntry, BlanksAroundTheEqualsSignAndCrlf) {
  auto e = dt::Entry::parse("[Desktop Entry]\r\nName = x y \r\nExec=\ta\n");
  EXPECT_EQ(e.raw("Desktop Entry", "Name"), "x y ");
  EXPECT_EQ(e.raw("Desktop Entry", "Exec"), "a");
}

TEST(DesktopEntry, RefusesWhatTheSpecificationForbids) {
  for (const char* bad : {
           "",                                    // no group
           "Name=x\n[Desktop Entry]\n",           // key before a group
           "[Other]\nName=x\n",                   // first group not Desktop Entry
           "[Desktop Entry]\nName=a\nName=b\n",   // duplicate key
           "[Desktop Entry]\n[Desktop Entry]\n",  // duplicate group
           "[Desktop Entry]\njust text\n",        // neither key nor comment
           "[Desktop Entry]\nNa me=x\n",          // bad key
           "[Desktop Entry]\nName[=x\n",          // bad locale
           "[Desktop Entry]\n=x\n",               // empty key
           "[Desktop Entry\nName=x\n",            // unterminated header
           "[Desktop Entry]\n[a]b]\n",            // bad group name
           "[Desktop Entry]\nName=a\r\r\n",       // a CR that is not a line end
           "[Desktop Entry]\nName=a\x01\n",       // a control character
       }) {
    EXPECT_THROW(dt::Entry::parse(bad), ks::Error) << bad;
  }
  EXPECT_THROW(dt::Entry::parse(std::string("[Desktop Entry]\nName=a\0b\n", 24)), ks::Error);
}

TEST(DesktopEntry, StringEscapes) {
  EXPECT_EQ(dt::unescape_string(R"(a\sb\nc\td\re\\f\;g)"), "a b\nc\td\re\\f\\;g");
  EXPECT_THROW(dt::unescape_string("a\\"), ks::Error);
  for (std::string s : {"plain", " leading", "back\\slash", "new\nline", "tab\t", ""})
    EXPECT_EQ(dt::unescape_string(dt::escape_string(s)), s) << s;
}

TEST(DesktopEntry, ExecQuotingRules) {
  using V = std::vector<std::string>;
  EXPECT_EQ(dt::split_exec("qbittorrent %U"), (V{"qbittorrent", "%U"}));
  EXPECT_EQ(dt::split_exec(R"("/opt/My App/run" --x "a \"b\" \$c \\d \`e")"),
            (V{"/opt/My App/run", "--x", "a \"b\" $c \\d `e"}));
  EXPECT_EQ(dt::split_exec("  a\t b  "), (V{"a", "b"}));
  EXPECT_THROW(dt::split_exec(""), ks::Error);
  EXPECT_THROW(dt::split_exec("   "), ks::Error);
  EXPECT_THROW(dt::split_exec(R"("unterminated)"), ks::Error);
  EXPECT_THROW(dt::split_exec(R"(a"b")"), ks::Error);
  EXPECT_THROW(dt::split_exec(R"("a"b)"), ks::Error);
  EXPECT_THROW(dt::split_exec(R"("\n")"), ks::Error);
}

TEST(DesktopEntry, QuotedArgumentsSplitBack) {
  for (std::string arg : {"/usr/bin/ksrun", "/opt/My App/ksrun", "100%", "a\"b", "$HOME", "`x`",
                          "back\\slash", "semi;colon", ""}) {
    auto args = dt::split_exec(dt::quote_exec_arg(arg) + " next");
    ASSERT_EQ(args.size(), 2u) << arg;
    std::string back = args[0];
    // '%' was doubled so that the launcher does not take it for a field code.
    std::string expected;
    for (char c : arg) expected += c == '%' ? std::string("%%") : std::string(1, c);
    EXPECT_EQ(back, expected) << arg;
  }
}

TEST(DesktopEntry, ProtectedOverride) {
  auto original = dt::Entry::parse(kQbittorrent);
  auto out =
      dt::make_protected(original, "/usr/share/applications/org.qbittorrent.qBittorrent.desktop",
                         "/usr/bin/ksrun", "mullvad");
  EXPECT_EQ(out.raw("Desktop Entry", "Exec"), "/usr/bin/ksrun --profile mullvad -- qbittorrent %U");
  EXPECT_EQ(out.raw("Desktop Action new-window", "Exec"),
            "/usr/bin/ksrun --profile mullvad -- qbittorrent --new-window \"file with space\" %f");
  EXPECT_EQ(out.raw("Desktop Entry", "DBusActivatable"), "false");
  EXPECT_EQ(out.raw("Desktop Entry", "TryExec"), "qbittorrent");  // still needs the app
  EXPECT_EQ(out.raw("Desktop Entry", "Name[sr@latin]"), "qBittorrent");
  auto marker = dt::marker_of(out);
  ASSERT_TRUE(marker);
  EXPECT_EQ(marker->profile, "mullvad");
  EXPECT_EQ(marker->original_path, "/usr/share/applications/org.qbittorrent.qBittorrent.desktop");
  EXPECT_FALSE(dt::marker_of(original));
  // What ksctl writes, it reads back the same.
  auto again = dt::Entry::parse(out.text());
  EXPECT_EQ(again.text(), out.text());
  EXPECT_TRUE(dt::marker_of(again));
  // Its own override is not protected twice (ksrun through ksrun).
  EXPECT_THROW(dt::make_protected(out, "x", "/usr/bin/ksrun", "default"), ks::Error);
}

TEST(DesktopEntry, ProtectedExecQuotesAnOddKsrunPath) {
  auto e = dt::Entry::parse("[Desktop Entry]\nType=Application\nExec=app %F\n");
  auto out = dt::make_protected(e, "/x.desktop", "/opt/kill switch/ksrun", "default");
  auto exec = dt::unescape_string(*out.raw("Desktop Entry", "Exec"));
  auto args = dt::split_exec(exec);
  ASSERT_EQ(args.size(), 6u);
  EXPECT_EQ(args[0], "/opt/kill switch/ksrun");
  EXPECT_EQ(args[3], "--");
  EXPECT_EQ(args[4], "app");
  EXPECT_EQ(args[5], "%F");
}

TEST(DesktopEntry, RefusesWhatCannotBeProtected) {
  EXPECT_THROW(dt::make_protected(dt::Entry::parse("[Desktop Entry]\nType=Link\nURL=x\n"), "/x",
                                  "/usr/bin/ksrun", "default"),
               ks::Error);
  EXPECT_THROW(dt::make_protected(dt::Entry::parse("[Desktop Entry]\nType=Application\n"
                                                   "DBusActivatable=true\n"),
                                  "/x", "/usr/bin/ksrun", "default"),
               ks::Error);
  EXPECT_THROW(dt::make_protected(dt::Entry::parse("[Desktop Entry]\nExec=\"broken\n"), "/x",
                                  "/usr/bin/ksrun", "default"),
               ks::Error);
  EXPECT_THROW(
      dt::make_protected(dt::Entry::parse("[Desktop Entry]\nExec=app\n"), "/x", "ksrun", "default"),
      ks::Error);
}

TEST(DesktopEntry, FileIds) {
  EXPECT_EQ(dt::file_id("org.qbittorrent.qBittorrent.desktop"),
            "org.qbittorrent.qBittorrent.desktop");
  EXPECT_EQ(dt::file_id("kde4/konsole.desktop"), "kde4-konsole.desktop");
  EXPECT_EQ(dt::file_id("mimeinfo.cache"), "");
  EXPECT_EQ(dt::file_id(".desktop"), "");
}
