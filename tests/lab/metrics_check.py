#!/usr/bin/env python3
"""Checks `ksctl metrics` text against `ksctl status --json` and `ksctl list --json` taken
at the same moment (lab_metrics): every number the metrics give must be the one ksd reports.

  metrics_check.py compare METRICS_FILE STATUS_FILE LIST_FILE
  metrics_check.py value METRICS_FILE NAME [LABEL=VALUE ...]   # prints the sample's value

A strict reader of the sample lines, written from the OpenMetrics text format (not shared
with the code under test): label values may hold only the escapes \\\\, \\" and \\n.
Exit 1 with one line per mismatch.
"""
import json
import os
import re
import sys

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def parse_labels(text, i, line):
    """Parses {a="x",b="y"} from text[i] == '{'; returns (labels, index after '}')."""
    labels = {}
    i += 1
    while text[i] != "}":
        m = NAME.match(text, i)
        if not m:
            raise ValueError(f"bad label name in: {line!r}")
        key = m.group(0)
        i = m.end()
        if text[i : i + 2] != '="':
            raise ValueError(f"bad label in: {line!r}")
        i += 2
        value = []
        while text[i] != '"':
            if text[i] == "\\":
                esc = text[i + 1]
                if esc not in '\\"n':
                    raise ValueError(f"bad escape \\{esc} in: {line!r}")
                value.append("\n" if esc == "n" else esc)
                i += 2
            else:
                if text[i] == "\n":
                    raise ValueError(f"raw newline in a label: {line!r}")
                value.append(text[i])
                i += 1
        i += 1
        if key in labels:
            raise ValueError(f"label {key} twice in: {line!r}")
        labels[key] = "".join(value)
        if text[i] == ",":
            i += 1
    return labels, i + 1


def parse(text):
    """{(name, frozenset(labels.items())): value} of every sample."""
    samples = {}
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        m = NAME.match(line)
        if not m:
            raise ValueError(f"bad sample line: {line!r}")
        name, i = m.group(0), m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = parse_labels(line, i, line)
        if line[i] != " ":
            raise ValueError(f"no value in: {line!r}")
        key = (name, frozenset(labels.items()))
        if key in samples:
            raise ValueError(f"sample twice: {line!r}")
        samples[key] = int(line[i + 1 :])
    return samples


def get(_samples, _metric, **labels):  # (a label may be called "name")
    return _samples.get((_metric, frozenset(labels.items())))


def compare(metrics, status, listing):
    errors = []
    s = parse(metrics)

    def expect(what, got, want):
        if got != want:
            errors.append(f"{what}: metrics say {got}, ksd says {want}")

    expect("killswitch_daemon_up", get(s, "killswitch_daemon_up"), 1)
    expect("killswitch_protected_apps", get(s, "killswitch_protected_apps"), status["protected_apps"])
    expect("killswitch_blocked_total", get(s, "killswitch_blocked_total"), status["blocked_total"])
    expect("killswitch_programs_pinned", get(s, "killswitch_programs_pinned"),
           int(status["programs"]["pinned"]))
    expect("killswitch_programs_attached", get(s, "killswitch_programs_attached"),
           int(status["programs"]["attached"]))
    expect("killswitch_build_info", get(s, "killswitch_build_info", version=status["version"]), 1)
    for field, value in status["counters"].items():
        expect(f"killswitch_{field}_total", get(s, f"killswitch_{field}_total"), value)
    for profile, p in status["profiles"].items():
        for field, value in p["counters"].items():
            expect(f"killswitch_profile_{field}_total{{profile={profile}}}",
                   get(s, f"killswitch_profile_{field}_total", profile=profile), value)
        expect(f"killswitch_profile_through_tunnel{{profile={profile}}}",
               get(s, "killswitch_profile_through_tunnel", profile=profile),
               int(p["traffic"] == "through tunnel"))
        for t in p["tunnels"]:
            at = {"profile": profile, "tunnel": t["name"]}
            expect(f"killswitch_tunnel_up{at}", get(s, "killswitch_tunnel_up", **at),
                   int(t["state"] == "up"))
            expect(f"killswitch_tunnel_ifindex{at}", get(s, "killswitch_tunnel_ifindex", **at),
                   t["ifindex"])
            for state in ("up", "down", "missing"):
                expect(f"killswitch_tunnel_state{at}[{state}]",
                       get(s, "killswitch_tunnel_state", killswitch_tunnel_state=state, **at),
                       int(t["state"] == state))
    apps = listing["apps"]
    for a in apps:
        at = {"app": a["cgroup"], "profile": a["profile"]}
        for field, value in a["counters"].items():
            expect(f"killswitch_app_{field}_total{at}",
                   get(s, f"killswitch_app_{field}_total", **at), value)
        expect(f"killswitch_app_processes{at}", get(s, "killswitch_app_processes", **at),
               len(a["pids"]))
        name = os.path.basename(a["command"].split(" ")[0])
        expect(f"killswitch_app_info{at}",
               get(s, "killswitch_app_info", pid=str(a["pids"][0]), name=name, **at), 1)
    # Nothing more than ksd reports: one series per app for each per-app family.
    infos = [k for k in s if k[0] == "killswitch_app_info"]
    expect("number of killswitch_app_info series", len(infos), len(apps))
    return errors


def main():
    if sys.argv[1] == "compare":
        with open(sys.argv[2], encoding="utf-8") as f:
            metrics = f.read()
        with open(sys.argv[3], encoding="utf-8") as f:
            status = json.load(f)
        with open(sys.argv[4], encoding="utf-8") as f:
            listing = json.load(f)
        try:
            errors = compare(metrics, status, listing)
        except (ValueError, KeyError, IndexError) as e:
            errors = [f"unreadable metrics: {e!r}"]
        for e in errors:
            print(e)
        sys.exit(1 if errors else 0)
    if sys.argv[1] == "value":
        with open(sys.argv[2], encoding="utf-8") as f:
            s = parse(f.read())
        labels = dict(arg.split("=", 1) for arg in sys.argv[4:])
        value = get(s, sys.argv[3], **labels)
        if value is None:
            sys.exit(f"no sample {sys.argv[3]}{labels}")
        print(value)
        return
    sys.exit(f"unknown command {sys.argv[1]}")


if __name__ == "__main__":
    main()
