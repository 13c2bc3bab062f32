// The pure half of `ksctl systemd protect`: unit-name rules and the drop-in text.
#include "killswitch/systemd_units.hpp"

#include <gtest/gtest.h>

#include "killswitch/error.hpp"

namespace sd = ks::systemd;

TEST(SystemdUnits, ServiceNamesGetTheirSuffix) {
  EXPECT_EQ(sd::service_name("qbittorrent"), "qbittorrent.service");
  EXPECT_EQ(sd::service_name("qbittorrent.service"), "qbittorrent.service");
  EXPECT_EQ(sd::service_name("getty@tty1.service"), "getty@tty1.service");
  EXPECT_EQ(sd::service_name("my-app_2:x"), "my-app_2:x.service");
  EXPECT_EQ(sd::service_name("a.b"), "a.b.service");  // a dot is not a unit type
}

TEST(SystemdUnits, RefusesBadNamesAndOtherUnitTypes) {
  for (const char* bad : {"", "a/b", "../etc/passwd", "foo bar", "foo;rm", "$(id)", ".service",
                          "-x", "@x", "tmpl@", "tmpl@.service", "x\n"}) {
    EXPECT_THROW(sd::service_name(bad), ks::Error) << "'" << bad << "'";
  }
  for (const char* other : {"foo.socket", "foo.timer", "foo.slice", "foo.scope", "foo.target"})
    EXPECT_THROW(sd::service_name(other), ks::Error) << other;
  EXPECT_THROW(sd::service_name(std::string(300, 'a')), ks::Error);
}

TEST(SystemdUnits, DropInPutsTheServiceIntoItsProfileSliceBehindTheCheck) {
  std::string text = sd::drop_in_text("work", "/usr/bin/ksctl");
  EXPECT_NE(text.find("[Service]\nSlice=killswitch-work.slice\n"), std::string::npos) << text;
  EXPECT_NE(text.find("ExecStartPre=+/usr/bin/ksctl verify --self\n"), std::string::npos);
  EXPECT_NE(text.find("Requires=ksd.service\n"), std::string::npos);
  EXPECT_NE(text.find("After=ksd.service killswitch-early.service\n"), std::string::npos);
  EXPECT_NE(text.find("CapabilityBoundingSet=~CAP_NET_RAW CAP_NET_ADMIN\n"), std::string::npos);
  EXPECT_EQ(sd::drop_in_path("/etc/systemd/system", "x.service"),
            "/etc/systemd/system/x.service.d/50-killswitch.conf");
}
