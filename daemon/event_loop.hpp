// ksd's event loop: an epoll set of the fds its parts own, and the wait for the next ready
// ones. The parts register their fds through FdWatcher; the daemon dispatches by fd.
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <vector>

#include "admin_server.hpp"
#include "killswitch/fd.hpp"

namespace ks {

class EventLoop : public FdWatcher {
 public:
  EventLoop();                  // throws ks::Error
  void watch(int fd) override;  // for input; throws ks::Error
  void unwatch(int fd) override;
  void watch_output(int fd, bool output) override;
  // Watch fd for `events` (EPOLLIN/EPOLLOUT), adding or changing its registration.
  void watch_for(int fd, std::uint32_t events);
  // Blocks until fds are ready (signals are fds too); their numbers.
  std::vector<int> wait();
  int fd() const { return epoll_.get(); }

 private:
  UniqueFd epoll_;
};

}  // namespace ks
