// Logging to stderr. Under systemd, stderr is the journal (JOURNAL_STREAM), and the
// "<N>" prefix sets the priority there.
#pragma once

#include <string>

namespace ks {

void log_info(const std::string& message);
void log_warning(const std::string& message);
void log_error(const std::string& message);

}  // namespace ks
