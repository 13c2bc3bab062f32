#include "killswitch/error.hpp"

#include <cerrno>
#include <cstring>

namespace ks {

void throw_errno(const std::string& what, int err) {
  throw Error(what + ": " + std::strerror(err), err);
}

void throw_errno(const std::string& what) { throw_errno(what, errno); }

}  // namespace ks
