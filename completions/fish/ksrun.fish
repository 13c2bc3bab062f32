# fish completion for ksrun(1). Keep in step with ../ksrun (bash) and ../zsh/_ksrun:
# tests/completions/run.sh compares all three with `ksrun --help`.

# Prints the command and its arguments when the command line has reached them (after
# ksrun's own options, or after --); fails before that.
function __ksrun_command
    set -l tokens (commandline -opc) (commandline -ct)
    set -e tokens[1]
    argparse -s h/help version profile= socket= no-instance-check -- $tokens 2>/dev/null; or return 1
    set -q argv[1]; or return 1
    string join0 -- $argv
end

function __ksrun_profiles
    sed -n 's/^\[profiles\.\([A-Za-z0-9_]*\)\].*/\1/p' /etc/killswitch/config.toml 2>/dev/null
end

complete -c ksrun -f
complete -c ksrun -n 'not __ksrun_command' -s h -l help -d 'print help and exit'
complete -c ksrun -n 'not __ksrun_command' -l version -d 'print version and exit'
complete -c ksrun -n 'not __ksrun_command' -l profile -x -a '(__ksrun_profiles)' -d 'profile to run under'
complete -c ksrun -n 'not __ksrun_command' -l socket -r -F -d 'ksd admin socket'
complete -c ksrun -n 'not __ksrun_command' -l no-instance-check -d 'do not look for an unprotected copy already running'
# The command, then the command's own completion for its arguments.
complete -c ksrun -x -a '(__fish_complete_subcommand --commandline (__ksrun_command | string split0))'
