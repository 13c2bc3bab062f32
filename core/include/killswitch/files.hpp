// Files ksctl writes for the user (the configuration, systemd drop-ins), and small text
// files read whole (/proc, cgroupfs).
#pragma once

#include <fcntl.h>
#include <sys/types.h>

#include <optional>
#include <string>

namespace ks {

// Writes TEXT to PATH through a temporary file in the same directory, fsync(2) and
// rename(2): a crash leaves the old file or the new one, never half of one. The file gets
// MODE whatever the umask. Throws ks::Error naming the step that failed.
void write_file_atomically(const std::string& path, const std::string& text, mode_t mode = 0644);

// The whole file at PATH (relative to DIR_FD), read with read(2), or nullopt with errno set
// when it cannot be opened or read. No iostreams: their first use builds the classic
// locale, ~0.3 ms that ksrun would pay on every launch.
std::optional<std::string> read_text_file(const std::string& path, int dir_fd = AT_FDCWD);

}  // namespace ks
