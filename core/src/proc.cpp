#include "killswitch/proc.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "killswitch/error.hpp"

namespace ks {

std::size_t count_inet_sockets(pid_t pid) {
  const std::string base = "/proc/" + std::to_string(pid);
  std::set<unsigned long> held;
  DIR* dir = ::opendir((base + "/fd").c_str());
  if (!dir) throw_errno("cannot inspect the open files of process " + std::to_string(pid));
  while (dirent* e = ::readdir(dir)) {
    char target[64];
    std::string link = base + "/fd/" + e->d_name;
    ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    unsigned long inode = 0;
    if (std::sscanf(target, "socket:[%lu]", &inode) == 1) held.insert(inode);
  }
  ::closedir(dir);
  if (held.empty()) return 0;

  std::size_t count = 0;
  for (const char* table : {"tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6"}) {
    std::ifstream in(base + "/net/" + table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string field;
      // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
      for (int i = 0; i < 10 && (fields >> field); ++i) {
      }
      unsigned long inode = std::strtoul(field.c_str(), nullptr, 10);
      if (held.count(inode)) ++count;
    }
  }
  return count;
}

}  // namespace ks
