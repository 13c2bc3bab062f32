#include "killswitch/app_slots.hpp"

namespace ks {

AppSlots::AppSlots(std::uint32_t slots) : used_(slots < 1 ? 1 : slots, false) {}

std::uint32_t AppSlots::take() {
  const auto count = static_cast<std::uint32_t>(used_.size());
  for (std::uint32_t tried = 1; tried < count; ++tried) {
    std::uint32_t slot = next_;
    next_ = next_ + 1 < count ? next_ + 1 : 1;
    if (!used_[slot]) {
      used_[slot] = true;
      ++in_use_;
      return slot;
    }
  }
  return 0;
}

bool AppSlots::claim(std::uint32_t slot) {
  if (slot == 0 || slot >= used_.size() || used_[slot]) return false;
  used_[slot] = true;
  ++in_use_;
  return true;
}

void AppSlots::release(std::uint32_t slot) {
  if (slot == 0 || slot >= used_.size() || !used_[slot]) return;
  used_[slot] = false;
  --in_use_;
}

}  // namespace ks
