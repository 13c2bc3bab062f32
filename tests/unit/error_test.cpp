#include "killswitch/error.hpp"

#include <gtest/gtest.h>

#include <cerrno>

TEST(Error, CarriesMessageAndErrno) {
  try {
    ks::throw_errno("open /nowhere", ENOENT);
    FAIL() << "throw_errno returned";
  } catch (const ks::Error& e) {
    EXPECT_EQ(e.sys_errno(), ENOENT);
    EXPECT_NE(std::string(e.what()).find("open /nowhere: "), std::string::npos);
  }
}
