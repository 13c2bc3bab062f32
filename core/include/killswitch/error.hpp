// The one error type of the project. Everything that can fail throws ks::Error with a
// message a user can act on; system-call failures carry their errno.
#pragma once

#include <stdexcept>
#include <string>

namespace ks {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, int sys_errno = 0)
      : std::runtime_error(message), sys_errno_(sys_errno) {}
  // errno of the failed system call, 0 when the error is not a system-call failure.
  int sys_errno() const noexcept { return sys_errno_; }

 private:
  int sys_errno_;
};

// Builds "what: strerror(errno)" from the current errno and throws it.
[[noreturn]] void throw_errno(const std::string& what);
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace ks
