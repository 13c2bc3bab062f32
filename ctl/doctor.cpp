// ksctl doctor: can this machine run the kill switch, and is anything in its way?
#include <iostream>

#include "commands.hpp"
#include "killswitch/diagnostics.hpp"
#include "output.hpp"

namespace ksctl {

int doctor_command(bool json) {
  Checks checks(json);
  bool warned = false;
  for (const ks::Diagnosis& d : ks::diagnose()) {
    checks.line(d.verdict, d.check, d.detail, d.fix);
    warned = warned || d.verdict == ks::Verdict::kWarn;
  }
  if (json) {
    std::cout << json_text({{"ok", !checks.failed()}, {"checks", checks.all()}}) << "\n";
  } else if (checks.failed()) {
    std::printf("%s\n", red("this system cannot run the kill switch as it is").c_str());
  } else {
    std::printf("%s\n", warned ? yellow("the kill switch can run here; see the warnings").c_str()
                               : green("the kill switch can run here").c_str());
  }
  return checks.failed() ? kFailed : kOk;
}

}  // namespace ksctl
