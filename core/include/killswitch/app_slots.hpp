// Counter slots for protected apps: an app's slot travels in its sockets' mark (bits 6-15,
// see KS_MARK_BASE), so the per-packet path counts into an array element instead of
// looking the app's cgroup up in a hash. Slot 0 means "none": apps beyond the slots are
// counted by cgroup id, exactly, just at the old price.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "killswitch_abi.h"

namespace ks {

class AppSlots {
 public:
  explicit AppSlots(std::uint32_t slots = KS_MAX_APP_SLOTS);

  // A free slot, or 0 when every one is taken. Round robin: a released slot is handed out
  // again as late as possible, since sockets that outlive their app still carry it and a
  // new owner would be credited with their packets.
  std::uint32_t take();
  // Re-adoption: claims the slot an earlier ksd gave an app. False (and nothing taken)
  // when it is 0, out of range or already taken.
  bool claim(std::uint32_t slot);
  void release(std::uint32_t slot);
  std::size_t in_use() const { return in_use_; }

 private:
  std::vector<bool> used_;  // index 0 unused
  std::uint32_t next_ = 1;
  std::size_t in_use_ = 0;
};

}  // namespace ks
