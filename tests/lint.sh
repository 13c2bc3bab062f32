#!/usr/bin/env bash
# Style as a test: every C and C++ source formatted by clang-format (the project's
# .clang-format files), every shell script free of shellcheck warnings. Both tools are
# installed by scripts/install-deps.sh; a missing tool is a failure, not a skip.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
status=0
for tool in clang-format shellcheck; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (scripts/install-deps.sh)"; exit 1; }
done

mapfile -t sources < <(find bpf core daemon launcher ctl tests fuzz -type f \
  \( -name '*.c' -o -name '*.h' -o -name '*.cpp' -o -name '*.hpp' \) | sort)
if out=$(clang-format --dry-run -Werror "${sources[@]}" 2>&1); then
  echo "PASS: clang-format: ${#sources[@]} sources formatted"
else
  echo "$out" | head -40
  echo "FAIL: clang-format: sources not formatted (clang-format -i FILE)"
  status=1
fi

# completions/zsh and completions/fish are not bash (tests/completions/run.sh parses them
# with zsh -n and fish --no-execute).
mapfile -t scripts < <({ find scripts tests bench -type f -name '*.sh'; echo .ci/run;
  find completions -maxdepth 1 -type f
  find packaging/deb packaging/sysvinit -type f ! -name conffiles; } | sort)
if out=$(shellcheck -S warning -x "${scripts[@]}" 2>&1); then
  echo "PASS: shellcheck: ${#scripts[@]} scripts without warnings"
else
  echo "$out" | head -60
  echo "FAIL: shellcheck: warnings in shell scripts"
  status=1
fi
exit "$status"
