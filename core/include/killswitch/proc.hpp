// What /proc tells about a process that ksd is asked to adopt.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace ks {

// Number of IPv4/IPv6 sockets (TCP, UDP, UDP-Lite, raw) the process holds open: socket
// inodes of /proc/PID/fd found in /proc/PID/net/{tcp,udp,udplite,raw}{,6}. Such sockets
// keep the cgroup they were created in, so moving the process would not protect them.
// Throws ks::Error when the process cannot be inspected.
std::size_t count_inet_sockets(pid_t pid);

}  // namespace ks
