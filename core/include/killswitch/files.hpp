// Files ksctl writes for the user (the configuration, systemd drop-ins).
#pragma once

#include <sys/types.h>

#include <string>

namespace ks {

// Writes TEXT to PATH through a temporary file in the same directory, fsync(2) and
// rename(2): a crash leaves the old file or the new one, never half of one. The file gets
// MODE whatever the umask. Throws ks::Error naming the step that failed.
void write_file_atomically(const std::string& path, const std::string& text, mode_t mode = 0644);

}  // namespace ks
