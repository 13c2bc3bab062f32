#include "killswitch/files.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"

namespace ks {

void write_file_atomically(const std::string& path, const std::string& text, mode_t mode) {
  std::string tmp = path + ".XXXXXX";
  UniqueFd fd(::mkstemp(tmp.data()));
  if (!fd) throw_errno("cannot write " + path);
  const auto fail = [&](const char* step) {
    const int saved = errno;
    ::unlink(tmp.c_str());
    errno = saved;
    throw_errno("cannot write " + path + " (" + step + ")");
  };
  if (::fchmod(fd.get(), mode) != 0) fail("fchmod");
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("write");
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0) fail("fsync");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
}

std::optional<std::string> read_text_file(const std::string& path, int dir_fd) {
  UniqueFd fd(::openat(dir_fd, path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) return text;
    text.append(buf, static_cast<std::size_t>(n));
  }
}

}  // namespace ks
