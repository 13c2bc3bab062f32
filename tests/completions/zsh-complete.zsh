# Prints, one per line, the matches zsh's completion system offers at the end of a
# command line:   zsh -f zsh-complete.zsh FUNCTION_DIR 'ksctl events --'
# Completion widgets run only inside ZLE, which needs a terminal: an interactive zsh runs
# in a pseudo-terminal (zsh/zpty), with compinit and FUNCTION_DIR first in $fpath, and the
# line plus a TAB is typed into it. A compadd wrapper there records what each call adds
# (after zsh's own matching against the word being completed) in a file, and the shell
# exits after the first completion.
zmodload zsh/zpty || exit 2
fndir=${1:?function directory} cmdline=${2:?command line}
tmp=$(mktemp -d) || exit 2
# No EXIT trap for the clean-up: zpty's forked child would inherit it and remove $tmp as
# soon as the inner shell exits, before its matches are read.
finish() { [[ -n $KS_ZPTY_DEBUG ]] || rm -rf -- $tmp; exit $1 }
out=$tmp/matches

cat >$tmp/setup.zsh <<SETUP
PS1='%{%}ks-prompt>' PS2='' RPS1=''
fpath=(${(q)fndir} \$fpath)
autoload -Uz compinit && compinit -u -d ${(q)${KS_ZCOMPDUMP:-$tmp/zcompdump}}
# One flat list: no menus, groups or prompts that would wait for more keys.
zstyle ':completion:*' list-grouped false
zstyle ':completion:*' insert-tab false
zstyle ':completion:*' menu no
LISTMAX=100000
compadd() {
  # Calls that only compute (-O, -A, -D) add nothing: pass them through untouched.
  if [[ \${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then
    builtin compadd "\$@"
    return
  fi
  local -a __hits
  builtin compadd -A __hits "\$@"
  (( \$#__hits )) && print -rl -- \$__hits >>${(q)out}
  builtin compadd "\$@"
}
_ks_capture_done() { print -r -- DONE >${(q)out}.done; exit 0 }
comppostfuncs=(_ks_capture_done)
bindkey '^I' complete-word
SETUP

zpty ks zsh -f -i
zpty -w ks "source ${(q)tmp}/setup.zsh"
# Type only once ZLE shows the prompt: typeahead sent before ZLE starts can be lost.
zpty -r -m ks line '*ks-prompt>*' || { print -u2 'zsh-complete: the shell did not start'; finish 2; }
zpty -w -n ks "$cmdline"$'\t'
# The inner shell exits after completing; wait for its marker (at most 20 s).
integer i
for (( i = 0; i < 200; i++ )); do
  [[ -e $out.done ]] && break
  sleep 0.1
done
if [[ -n $KS_ZPTY_DEBUG ]]; then while zpty -r -t ks dbg; do print -u2 -r -- "${(V)dbg}"; done; fi
zpty -d ks
[[ -e $out.done ]] || { print -u2 "zsh-complete: no completion for: $cmdline"; finish 2; }
[[ -e $out ]] && sort -u $out
finish 0
