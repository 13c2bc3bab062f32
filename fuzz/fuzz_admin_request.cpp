// The admin socket's requests: any local user can send ksd any bytes (ipc::parse_request).
#include <cstddef>
#include <cstdint>
#include <string>

#include "killswitch/ipc.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string error;
  auto request =
      ks::ipc::parse_request(std::string(reinterpret_cast<const char*>(data), size), error);
  if (!request && error.empty()) __builtin_trap();  // a refusal must say why
  return 0;
}
