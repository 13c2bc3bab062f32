# fish completion for ksd(8). Keep in step with ../ksd (bash) and ../zsh/_ksd:
# tests/completions/run.sh compares all three with `ksd --help`.
complete -c ksd -f
complete -c ksd -s h -l help -d 'print help and exit'
complete -c ksd -l version -d 'print version and exit'
complete -c ksd -l config -r -F -d 'configuration file'
complete -c ksd -l socket -r -F -d 'admin socket'
complete -c ksd -l pin-dir -x -a '(__fish_complete_directories)' -d 'where programs, links and maps are pinned (bpffs)'
complete -c ksd -l slice -x -d 'name of the protected cgroup tree below the cgroup2 mount'
complete -c ksd -l attach-only -d 'put enforcement in place and exit (early-boot unit)'
complete -c ksd -l check -d 'validate the configuration, touch nothing'
complete -c ksd -l json -d 'with --check: one JSON document'
