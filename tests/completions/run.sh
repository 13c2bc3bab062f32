#!/usr/bin/env bash
# ctest `completions`: the bash, zsh and fish completions of ksctl, ksrun and ksd, driven
# through the real shells:
#   - every file parses (bash -n, zsh -n, fish --no-execute);
#   - drift: at every level of ksctl (top, each subcommand, systemd's subcommands) the
#     subcommands each shell offers are the ones `ksctl ... --help` of this build lists,
#     and so are the options (the level's own plus the global --socket/--pin-dir, which
#     ksctl accepts after the subcommand too); ksrun's and ksd's options are those of
#     their --help. bash offers long options only, zsh and fish the short ones too;
#   - values: profiles from /etc/killswitch/config.toml (a test file put there in a
#     private mount namespace), files, pids, global options before and after the
#     subcommand, ksrun's command position and the command's own arguments.
# zsh is driven through its completion system in a pseudo-terminal (zsh-complete.zsh),
# fish through `complete -C`, bash by calling the completion function with COMP_WORDS.
# Without zsh or fish the test fails under CI=true and is skipped (exit 77) elsewhere.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=${KS_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
build=${KS_BUILD_DIR:-$src/build}

# The profile completion reads the system's /etc/killswitch/config.toml, like ksd. To
# give it a known file without touching the machine's /etc, the test runs in a private
# mount namespace with an overlay on /etc (as root, or in a user namespace otherwise).
if [[ ${KS_COMPLETIONS_NS:-} != 1 ]]; then
  for ns in "unshare --mount --propagation private" \
    "unshare --user --map-root-user --mount --propagation private"; do
    # shellcheck disable=SC2086  # $ns is a command with its options
    if $ns true 2>/dev/null; then
      KS_COMPLETIONS_NS=1 exec $ns bash "${BASH_SOURCE[0]}" "$@"
    fi
  done
  KS_COMPLETIONS_NS=none
fi

failures=0
pass() { echo "PASS: $*"; }
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
skip_or_fail() {
  if [[ ${CI:-} == true ]]; then
    echo "FAIL: $* (CI=true: the test must not be skipped; scripts/install-deps.sh)"
    exit 1
  fi
  echo "SKIP: $*"
  exit 77
}

for shell in zsh fish; do
  command -v "$shell" >/dev/null || skip_or_fail "$shell is not installed"
done
for bin in ksctl ksrun ksd; do
  [[ -x $build/$bin ]] || { echo "FAIL: $build/$bin is not built"; exit 1; }
done

tmp=$(mktemp -d)
cleanup() {
  [[ ${etc_overlay:-} == 1 ]] && umount /etc 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
# fish loads a command's completion only when the command exists: the build's come first.
export PATH=$build:$PATH
# Neither the user's shell configuration nor the test's HOME may change the results.
export HOME=$tmp/home XDG_CONFIG_HOME=$tmp/config XDG_DATA_HOME=$tmp/data
export KS_ZCOMPDUMP=$tmp/zcompdump
mkdir -p "$HOME" "$tmp/files"
: >"$tmp/files/config.toml"
: >"$tmp/files/ksd.sock"

profiles_ok=0
if [[ $KS_COMPLETIONS_NS == 1 ]]; then
  mkdir -p "$tmp/etc-upper" "$tmp/etc-work"
  if mount -t overlay ks-completions-etc \
    -o "lowerdir=/etc,upperdir=$tmp/etc-upper,workdir=$tmp/etc-work" /etc 2>/dev/null; then
    etc_overlay=1
    mkdir -p /etc/killswitch
    printf '%s\n' '[profiles.default]' 'interfaces = ["wg0"]' '' '[profiles.work_vpn]' \
      'interfaces = ["wg1"]' >/etc/killswitch/config.toml
    profiles_ok=1
  fi
fi
if ((!profiles_ok)); then
  msg="no private mount namespace with an overlay on /etc: profile completion not checked"
  [[ ${CI:-} == true ]] && fail "$msg" || echo "SKIP: $msg"
fi

# ---- syntax ----------------------------------------------------------------------------
for f in "$src"/completions/{ksctl,ksrun,ksd}; do
  bash -n "$f" || fail "bash -n $f"
done
for f in "$src"/completions/zsh/_*; do
  zsh -n "$f" || fail "zsh -n $f"
done
for f in "$src"/completions/fish/*.fish; do
  fish --no-execute "$f" || fail "fish --no-execute $f"
done
pass "syntax: bash -n, zsh -n, fish --no-execute"

# ---- the three shells ------------------------------------------------------------------
# complete_SHELL LINE: the matches SHELL offers at the end of LINE, one per line, sorted.
complete_bash() {
  local cmd=${1%% *}
  # shellcheck disable=SC2016  # expanded by the inner bash
  bash --norc --noprofile -c '
    source "$1"
    read -ra COMP_WORDS <<<"$2"
    [[ $2 == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1)) COMP_LINE=$2 COMP_POINT=${#2}
    "_$3"
    printf "%s\n" "${COMPREPLY[@]}"' _ "$src/completions/$cmd" "$1" "$cmd" | sed '/^$/d' | sort -u
}
complete_zsh() {
  timeout 60 zsh -f "$here/zsh-complete.zsh" "$src/completions/zsh" "$1" | sort -u
}
# fish finds the files as it finds installed ones: by name on $fish_complete_path.
complete_fish() {
  # shellcheck disable=SC2016  # fish syntax
  timeout 60 fish -c 'set -p fish_complete_path $argv[1]; complete -C $argv[2]' \
    "$src/completions/fish" "$1" | cut -f1 | sort -u
}
shells=(bash zsh fish)

# check NAME SHELL LINE EXPECTED: the matches are exactly EXPECTED (lines).
check() {
  local name=$1 shell=$2 line=$3 expected got
  expected=$(sed '/^$/d' <<<"$4" | sort -u)
  if ! got=$("complete_$shell" "$line"); then
    fail "$shell: '$line': the completion failed"
    return
  fi
  got=$(grep -vx -- '--\?' <<<"$got" || true) # `--` (end of options) is not drift
  if [[ $got == "$expected" ]]; then
    pass "$shell: $name"
  else
    fail "$shell: $name: '$line' offers
$(diff <(echo "$expected") <(echo "$got") | sed -n 's/^[<>]/  &/p')
  (< expected, > offered)"
  fi
}
# offers NAME SHELL LINE WORD: WORD is among the matches.
offers() {
  local got
  got=$("complete_$2" "$3") || true
  if grep -qx -- "$4" <<<"$got"; then
    pass "$2: $1"
  else
    fail "$2: $1: '$3' does not offer '$4' (offers: $(head -c 300 <<<"$got" | tr '\n' ' '))"
  fi
}
# offers_file NAME SHELL LINE PATH: PATH is offered (zsh adds file names relative to the
# directory typed so far: there the name alone).
offers_file() {
  local want=$4
  [[ $2 == zsh ]] && want=${4##*/}
  offers "$1" "$2" "$3" "$want"
}
not_offers() {
  local got
  got=$("complete_$2" "$3") || true
  if grep -qx -- "$4" <<<"$got"; then
    fail "$2: $1: '$3' offers '$4'"
  else
    pass "$2: $1"
  fi
}

# ---- drift: what --help of this build lists --------------------------------------------
# help_subcommands/help_options BIN [SUBCOMMAND...]: the names in CLI11's --help sections.
help_subcommands() {
  "$build/$1" "${@:2}" --help | awk '/^[A-Za-z]+:$/ { s = ($0 == "Subcommands:") }
    s && /^  [a-z]/ { print $1 }'
}
help_options() {
  "$build/$1" "${@:2}" --help | awk '/^[A-Za-z]+:$/ { s = ($0 == "Options:") }
    s && /^  -/ { n = split($1, o, ","); for (i = 1; i <= n; i++) print o[i] }'
}
long_only() { grep -- '^--' || true; }
globals=$(help_options ksctl | grep -vx -e -h -e --help -e --version)

# Every level of ksctl's command tree, from its --help.
levels=("")
for cmd in $(help_subcommands ksctl); do
  levels+=("$cmd")
  for sub in $(help_subcommands ksctl "$cmd"); do levels+=("$cmd $sub"); done
done
[[ ${#levels[@]} -gt 9 ]] || fail "ksctl --help lists too few subcommands: ${levels[*]}"
for level in "${levels[@]}"; do
  read -ra words <<<"$level"
  subcommands=$(help_subcommands ksctl "${words[@]}")
  options=$(help_options ksctl "${words[@]}")
  [[ -n $level ]] && options+=$'\n'$globals
  prefix="ksctl${level:+ $level}"
  for shell in "${shells[@]}"; do
    if [[ -n $subcommands ]]; then
      check "'$prefix' offers the subcommands of --help" "$shell" "$prefix " "$subcommands"
    fi
    expected=$options
    [[ $shell == bash ]] && expected=$(long_only <<<"$options")
    check "'$prefix -' offers the options of --help" "$shell" "$prefix -" "$expected"
  done
done
for bin in ksrun ksd; do
  for shell in "${shells[@]}"; do
    expected=$(help_options "$bin")
    [[ $shell == bash ]] && expected=$(long_only <<<"$expected")
    check "'$bin -' offers the options of --help" "$shell" "$bin -" "$expected"
  done
done

# ---- behaviour -------------------------------------------------------------------------
for shell in "${shells[@]}"; do
  check "a subcommand by its prefix" "$shell" "ksctl sta" status
  check "a global option before the subcommand" "$shell" "ksctl --socket /tmp/x events --f" --follow
  check "a global option after the subcommand" "$shell" "ksctl events --socket /tmp/x --f" --follow
  check "global options between the levels" "$shell" \
    "ksctl --pin-dir /tmp/p systemd --socket /tmp/x un" unprotect
  check "systemd unprotect's own options only" "$shell" \
    "ksctl systemd unprotect --p" --pin-dir
  offers_file "ksctl --config completes files" "$shell" "ksctl doctor --config $tmp/files/con" \
    "$tmp/files/config.toml"
  offers_file "ksctl --socket completes files" "$shell" "ksctl --socket $tmp/files/ks" \
    "$tmp/files/ksd.sock"
  offers_file "ksd --config completes files" "$shell" "ksd --config $tmp/files/con" \
    "$tmp/files/config.toml"
  offers "ksctl protect --pid completes process ids" "$shell" "ksctl protect --pid " 1
  offers "ksctl setup --tunnel completes interfaces" "$shell" "ksctl setup --tunnel l" lo
  check "ksctl metrics --format completes the formats" "$shell" "ksctl metrics --format " \
    $'openmetrics\nprometheus'
  offers "ksrun completes the command" "$shell" "ksrun --profile default --socket /tmp/x ba" bash
  offers "ksrun completes the command after --" "$shell" "ksrun -- ba" bash
  if ((profiles_ok)); then
    check "ksctl verify --profile completes the configured profiles" "$shell" \
      "ksctl verify --profile " $'default\nwork_vpn'
    check "ksctl systemd protect --profile completes them" "$shell" \
      "ksctl systemd protect --profile w" work_vpn
    check "ksrun --profile completes them" "$shell" "ksrun --profile " $'default\nwork_vpn'
  fi
done
# The command's own arguments come from its completion: bash needs bash-completion's
# _command_offset for that (not a dependency), zsh and fish have it built in.
for shell in zsh fish; do
  offers "ksrun hands the arguments to the command's completion" "$shell" \
    "ksrun --profile default ls --al" --all
  not_offers "ksrun's options end at the command" "$shell" "ksrun ls --pr" --profile
done
if units=$(systemctl list-unit-files --type=service --no-legend 2>/dev/null) &&
  unit=$(awk 'NR == 1 { print $1 }' <<<"$units") && [[ -n $unit ]]; then
  for shell in "${shells[@]}"; do
    offers "ksctl systemd protect completes service units" "$shell" \
      "ksctl systemd protect ${unit:0:3}" "$unit"
  done
else
  echo "SKIP: systemctl lists no service units here: unit completion not checked"
fi

if ((failures)); then
  echo "FAIL: $failures completion check(s) failed"
  exit 1
fi
echo "PASS: all completion checks"
