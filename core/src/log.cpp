#include "killswitch/log.hpp"

#include <cstdio>
#include <cstdlib>

namespace ks {
namespace {

void emit(int priority, const char* label, const std::string& message) {
  static const bool journal = std::getenv("JOURNAL_STREAM") != nullptr;
  if (journal)
    std::fprintf(stderr, "<%d>%s\n", priority, message.c_str());
  else
    std::fprintf(stderr, "ksd: %s%s\n", label, message.c_str());
}

}  // namespace

void log_info(const std::string& message) { emit(6, "", message); }
void log_warning(const std::string& message) { emit(4, "warning: ", message); }
void log_error(const std::string& message) { emit(3, "error: ", message); }

}  // namespace ks
