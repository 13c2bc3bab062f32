#include "event_loop.hpp"

#include <cerrno>

#include "killswitch/error.hpp"

namespace ks {

EventLoop::EventLoop() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
  if (!epoll_) throw_errno("epoll_create1");
}

void EventLoop::watch(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl");
}

void EventLoop::unwatch(int fd) {
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);  // may be closed already
}

void EventLoop::watch_output(int fd, bool output) { watch_for(fd, output ? EPOLLOUT : EPOLLIN); }

void EventLoop::watch_for(int fd, std::uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev);
}

std::vector<int> EventLoop::wait() {
  epoll_event events[16];
  for (;;) {
    int n = ::epoll_wait(epoll_.get(), events, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("epoll_wait");
    }
    std::vector<int> ready;
    ready.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) ready.push_back(events[i].data.fd);
    return ready;
  }
}

}  // namespace ks
