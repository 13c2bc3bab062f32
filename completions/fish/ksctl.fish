# fish completion for ksctl(8). Keep in step with ../ksctl (bash) and ../zsh/_ksctl:
# tests/completions/run.sh compares all three with `ksctl --help`.

# The words that are neither options nor option values: the subcommand, systemd's
# subcommand, the unit. (ksctl's global options are accepted before and after the
# subcommand, so their values may appear anywhere.)
function __ksctl_words
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l skip 0
    for t in $tokens
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $t
            case --socket --pin-dir --config --unit-dir --profile --pid --since --limit --slice \
                --tunnel --wireguard-dir --resolvconf-dir --format --timeout --ksrun --interval \
                --max-backoff
                set skip 1
            case '-*'
            case '*'
                printf '%s\n' $t
        end
    end
end

# True when the words so far are exactly the arguments (none: the subcommand's position).
function __ksctl_at
    set -l words (__ksctl_words)
    test "$words" = "$argv"
end

# True inside subcommand $argv[1] (and systemd's subcommand $argv[2]).
function __ksctl_in
    set -l words (__ksctl_words)
    test "$words[1]" = "$argv[1]"; or return 1
    set -q argv[2]; or return 0
    test "$words[2]" = "$argv[2]"
end

# Profile names as the bash completion reads them: the [profiles.NAME] tables of the
# system configuration (the one ksd reads by default).
function __ksctl_profiles
    sed -n 's/^\[profiles\.\([A-Za-z0-9_]*\)\].*/\1/p' /etc/killswitch/config.toml 2>/dev/null
end

# Desktop file ids, as launchers see them: the user's directory and $XDG_DATA_DIRS.
function __ksctl_desktop_ids
    set -l home $XDG_DATA_HOME
    test -n "$home"; or set home $HOME/.local/share
    set -l dirs (string split : -- "$XDG_DATA_DIRS")
    test -n "$XDG_DATA_DIRS"; or set dirs /usr/local/share /usr/share
    for d in $home $dirs
        for f in $d/applications/*.desktop
            string replace -r '\.desktop$' '' -- (path basename $f)
        end
    end
end

function __ksctl_units
    systemctl list-unit-files --type=service --no-legend 2>/dev/null | string replace -r ' .*' ''
end

complete -c ksctl -f

# Global options, at every level.
complete -c ksctl -s h -l help -d 'print help and exit'
complete -c ksctl -n __ksctl_at -l version -d 'print version and exit'
complete -c ksctl -l socket -r -F -d 'ksd admin socket'
complete -c ksctl -l pin-dir -x -a '(__fish_complete_directories)' -d 'pin directory, read when ksd is down or removed'

# Subcommands.
complete -c ksctl -n __ksctl_at -a status -d 'daemon, enforcement, tunnels and totals'
complete -c ksctl -n __ksctl_at -a list -d 'one row per protected app'
complete -c ksctl -n __ksctl_at -a reload -d 're-read the configuration'
complete -c ksctl -n __ksctl_at -a events -d 'blocked attempts'
complete -c ksctl -n __ksctl_at -a metrics -d 'counters, tunnel states and protected apps as OpenMetrics text'
complete -c ksctl -n __ksctl_at -a protect -d 'adopt a running process'
complete -c ksctl -n __ksctl_at -a teardown -d 'remove protection'
complete -c ksctl -n __ksctl_at -a doctor -d 'can this machine run the kill switch, and is it set up'
complete -c ksctl -n __ksctl_at -a setup -d "find this machine's VPN tunnels and their DNS servers, show or write the profile"
complete -c ksctl -n __ksctl_at -a verify -d 'live self-test of the kill switch'
complete -c ksctl -n __ksctl_at -a systemd -d 'put services into the protected slice'
complete -c ksctl -n __ksctl_at -a desktop -d 'start desktop applications protected from the menu'
complete -c ksctl -n __ksctl_at -a notify -d 'show blocked attempts as desktop notifications'

# --json: status, list, reload, doctor, setup, events, verify, protect.
for c in status list reload doctor setup verify protect
    complete -c ksctl -n "__ksctl_in $c" -l json -d 'print one JSON document'
end
complete -c ksctl -n '__ksctl_in doctor' -l config -r -F -d 'configuration file to check'

complete -c ksctl -n '__ksctl_in setup' -l write -d 'write the configuration file'
complete -c ksctl -n '__ksctl_in setup' -l force -d 'with --write: replace an edited file'
complete -c ksctl -n '__ksctl_in setup' -l config -r -F -d 'configuration file to write'
complete -c ksctl -n '__ksctl_in setup' -l profile -x -a '(__ksctl_profiles)' -d 'name of the profile to write'
complete -c ksctl -n '__ksctl_in setup' -l tunnel -x -a '(path basename /sys/class/net/*)' -d 'use this interface (repeatable, in order of preference)'
complete -c ksctl -n '__ksctl_in setup' -l wireguard-dir -x -a '(__fish_complete_directories)' -d "where wg-quick's NAME.conf files are"
complete -c ksctl -n '__ksctl_in setup' -l resolvconf-dir -x -a '(__fish_complete_directories)' -d 'where resolvconf keeps its per-interface records (repeatable)'

complete -c ksctl -n '__ksctl_in metrics' -l format -x -a 'openmetrics prometheus' -d 'output format'
complete -c ksctl -n '__ksctl_in metrics' -l http -d 'answer one HTTP request read from stdin (killswitch-metrics.socket)'
complete -c ksctl -n '__ksctl_in metrics' -l timeout -x -d "seconds to wait for the request and for each of ksd's answers"

complete -c ksctl -n '__ksctl_in events' -l json -d 'one JSON document (with --follow: one object per line)'
complete -c ksctl -n '__ksctl_in events' -s f -l follow -d 'keep printing new events'
complete -c ksctl -n '__ksctl_in events' -l since -x -d 'first sequence number to show'
complete -c ksctl -n '__ksctl_in events' -l limit -x -d 'show at most this many, the newest (1 to 2000)'

complete -c ksctl -n '__ksctl_in verify' -l self -d "only check the caller's own cgroup"
complete -c ksctl -n '__ksctl_in verify' -l slice -x -d 'protected tree name (--self)'
complete -c ksctl -n '__ksctl_in verify' -l profile -x -a '(__ksctl_profiles)' -d 'profile whose tunnel is tested'

complete -c ksctl -n '__ksctl_in protect' -l pid -x -a '(__fish_complete_pids)' -d 'process id'
complete -c ksctl -n '__ksctl_in protect' -l profile -x -a '(__ksctl_profiles)' -d profile

complete -c ksctl -n '__ksctl_in teardown' -l slice -x -d 'protected tree name (when ksd is not running)'
complete -c ksctl -n '__ksctl_in teardown' -l kill-apps -d 'kill protected processes first'
complete -c ksctl -n '__ksctl_in teardown' -s y -l yes -d 'do not ask'
complete -c ksctl -n '__ksctl_in teardown' -l force -d 'even while ksd runs'
complete -c ksctl -n '__ksctl_in teardown' -l json -d 'print one JSON document'

complete -c ksctl -n '__ksctl_at systemd' -a protect -d 'write the drop-in that runs UNIT protected, then daemon-reload'
complete -c ksctl -n '__ksctl_at systemd' -a unprotect -d 'remove the drop-in of UNIT, then daemon-reload'
complete -c ksctl -n '__ksctl_at systemd protect; or __ksctl_at systemd unprotect' -a '(__ksctl_units)'
complete -c ksctl -n '__ksctl_in systemd protect; or __ksctl_in systemd unprotect' -l json -d 'print one JSON document'
complete -c ksctl -n '__ksctl_in systemd protect; or __ksctl_in systemd unprotect' -l unit-dir -x -a '(__fish_complete_directories)' -d 'where drop-ins go'
complete -c ksctl -n '__ksctl_in systemd protect' -l profile -x -a '(__ksctl_profiles)' -d profile
complete -c ksctl -n '__ksctl_in systemd protect' -l config -r -F -d 'config file, read when ksd is down'

complete -c ksctl -n '__ksctl_at desktop' -a protect -d 'write the override that runs APP through ksrun'
complete -c ksctl -n '__ksctl_at desktop' -a unprotect -d 'remove the override ksctl wrote for APP'
complete -c ksctl -n '__ksctl_at desktop' -a list -d 'the overrides ksctl wrote'
complete -c ksctl -n '__ksctl_at desktop protect; or __ksctl_at desktop unprotect' -a '(__ksctl_desktop_ids)'
complete -c ksctl -n '__ksctl_in desktop protect; or __ksctl_in desktop unprotect; or __ksctl_in desktop list' -l json -d 'print one JSON document'
complete -c ksctl -n '__ksctl_in desktop protect' -l profile -x -a '(__ksctl_profiles)' -d profile
complete -c ksctl -n '__ksctl_in desktop protect' -l ksrun -r -F -d 'absolute path of ksrun for the Exec lines'

complete -c ksctl -n '__ksctl_in notify' -l interval -x -d 'seconds between two notifications of one app'
complete -c ksctl -n '__ksctl_in notify' -l max-backoff -x -d 'longest wait between two attempts to reach ksd again'
complete -c ksctl -n '__ksctl_in notify' -l no-daemon-notices -d 'no notification when ksd becomes unreachable or comes back'
