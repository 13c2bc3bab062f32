// ipc.hpp's admin_group_id, apart from the rest of ipc.cpp: getgrnam(3) goes through NSS,
// which a statically linked program (ksrun) must not pull in (glibc would load the NSS
// modules of whatever glibc is installed at run time). ksrun never asks for the group.
#include <grp.h>

#include "killswitch/ipc.hpp"

namespace ks::ipc {

std::optional<gid_t> admin_group_id() {
  if (const group* g = ::getgrnam(kAdminGroup)) return g->gr_gid;
  return std::nullopt;
}

}  // namespace ks::ipc
