// AppSlots: the counter slots carried in protected sockets' marks.
#include "killswitch/app_slots.hpp"

#include <gtest/gtest.h>

#include <set>

namespace ks {
namespace {

TEST(AppSlots, HandsOutEverySlotOnceThenNone) {
  AppSlots slots(5);  // slots 1..4
  std::set<std::uint32_t> got;
  for (int i = 0; i < 4; ++i) got.insert(slots.take());
  EXPECT_EQ(got, (std::set<std::uint32_t>{1, 2, 3, 4}));
  EXPECT_EQ(slots.take(), 0u) << "no slot left: 0 (the app is counted by cgroup id)";
  EXPECT_EQ(slots.in_use(), 4u);
}

TEST(AppSlots, ReleasedSlotsComeBackLast) {
  AppSlots slots(5);
  EXPECT_EQ(slots.take(), 1u);
  EXPECT_EQ(slots.take(), 2u);
  slots.release(1);
  // Round robin: 3 and 4 first, so sockets of the app that had 1 are not credited to a
  // new app sooner than necessary.
  EXPECT_EQ(slots.take(), 3u);
  EXPECT_EQ(slots.take(), 4u);
  EXPECT_EQ(slots.take(), 1u);
  EXPECT_EQ(slots.take(), 0u);
  slots.release(3);
  EXPECT_EQ(slots.take(), 3u);
}

TEST(AppSlots, ClaimForReadoption) {
  AppSlots slots(5);
  EXPECT_TRUE(slots.claim(3));
  EXPECT_FALSE(slots.claim(3)) << "taken twice";
  EXPECT_FALSE(slots.claim(0)) << "0 is 'none'";
  EXPECT_FALSE(slots.claim(5)) << "out of range";
  EXPECT_EQ(slots.take(), 1u);
  EXPECT_EQ(slots.take(), 2u);
  EXPECT_EQ(slots.take(), 4u) << "the claimed slot is skipped";
  EXPECT_EQ(slots.in_use(), 4u);
  slots.release(0);
  slots.release(9);
  slots.release(3);
  slots.release(3);
  EXPECT_EQ(slots.in_use(), 3u) << "releasing 0, unknown or free slots changes nothing";
}

TEST(AppSlots, DefaultSizeMatchesTheMark) {
  AppSlots slots;
  std::uint32_t last = 0;
  for (std::uint32_t s; (s = slots.take()) != 0;) last = s;
  EXPECT_EQ(last, KS_MAX_APP_SLOTS - 1u);
  EXPECT_EQ((last << KS_MARK_SLOT_SHIFT) & ~KS_MARK_SLOT_MASK, 0u) << "fits the mark's bits";
}

}  // namespace
}  // namespace ks
