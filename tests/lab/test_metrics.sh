#!/usr/bin/env bash
# Metrics (`ksctl metrics`, its socket-activated HTTP endpoint) from a running ksd with real
# counters, checked by Prometheus's own tools from Debian's prometheus package (unpacked by
# scripts/fetch-promtool.sh, never installed: that would start a Prometheus server):
#   1. a protected app whose command's name holds a quote, a backslash and a newline sends
#      through the tunnel and is refused off it; `ksctl metrics` agrees with `ksctl status
#      --json` and `list --json` on every number (tests/lab/metrics_check.py);
#   2. the text 0.0.4 rendering passes `promtool check metrics` without a complaint; the
#      OpenMetrics rendering is read by Prometheus's OpenMetrics parser (`promtool tsdb
#      create-blocks-from openmetrics`, which needs timestamps: added to each sample);
#   3. the HTTP endpoint under systemd-socket-activate (Accept=yes, as the .socket unit):
#      curl gets 200 with the OpenMetrics content type, text 0.0.4 when it asks for
#      text/plain; 404, 405, 400, 431 and 408 for bad, oversized and silent requests;
#   4. a real Prometheus server scrapes the endpoint (OpenMetrics negotiated): the target is
#      up without a scrape error, and the app's hostile name arrives intact as a label;
#   5. ksd killed: `ksctl metrics` exits 3 and says killswitch_daemon_up 0 and that the
#      programs are still pinned; the endpoint still answers, Prometheus sees the daemon down.
# The tools cannot be fetched: the scenario fails (in CI too), it never skips.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

prom_bin=$(bash "$KS_SOURCE_DIR/scripts/fetch-promtool.sh") ||
  fail "cannot obtain promtool (scripts/fetch-promtool.sh: apt-get download prometheus)"
PROMTOOL=$prom_bin/promtool
PROMETHEUS=$prom_bin/prometheus
CHECK=$KS_SOURCE_DIR/tests/lab/metrics_check.py
METRICS_PORT=9848 # in the client netns: its own loopback, no clash with the host's ports
PROM_PORT=9090

lab_up
ks_up
ks_wait_tunnel_state up

# ---- 1. real counters, a hostile name ---------------------------------------------------------
# The app runs as a symlink to python3 whose name holds what must be escaped in a label.
evil_name=$'ev"il\\\nname'
# (The interpreter itself: a shim such as pyenv's would choke on the name.)
ln -s "$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')" "$LAB_DIR/$evil_name"
cat >"$LAB_DIR/app.py" <<'EOF'
import os, socket, struct, sys, time
dst, port, eth0, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(b"allowed", (dst, port))  # through the tunnel
refused = 0
off = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
off.setsockopt(socket.IPPROTO_IP, 50, struct.pack("!I", eth0))  # IP_UNICAST_IF: eth0
for _ in range(3):
    try:
        off.sendto(b"blocked", (dst, port))
    except PermissionError:
        refused += 1
with open(ready + ".tmp", "w") as f:
    f.write(str(refused))
os.rename(ready + ".tmp", ready)
time.sleep(600)
EOF
eth0=$(lab_exec_client ip -o link show dev "$LAB_CLIENT_PHYS" | cut -d: -f1)
ks_spawn_protected app "$LAB_DIR/$evil_name" "$LAB_DIR/app.py" "$LAB_NET_IP4" "$LAB_ECHO_PORT" \
  "$eth0" "$LAB_DIR/app.ready"
app_pid=$LAB_LAST_PID
lab_wait_file "$LAB_DIR/app.ready"
assert_eq "$(cat "$LAB_DIR/app.ready")" 3 "the app's 3 sends off the tunnel were refused (EPERM)"
lab_poll_until 5 ks_app_grows "$app_pid" allowed_packets 0 5 ||
  fail "the app's 5 datagrams were not counted as allowed"
sleep 0.5 # the echo server's replies (counted on ingress) arrive

snapshot() { # PREFIX: metrics, status and list, taken together
  ks_ctl metrics >"$LAB_DIR/$1.om"
  ks_ctl status --json >"$LAB_DIR/$1.status.json"
  ks_ctl list --json >"$LAB_DIR/$1.list.json"
}
snapshot m1
if ! out=$(python3 "$CHECK" compare "$LAB_DIR/m1.om" "$LAB_DIR/m1.status.json" "$LAB_DIR/m1.list.json"); then
  # Traffic in between (a late reply) would differ: once more before calling it wrong.
  sleep 1
  snapshot m1
  out=$(python3 "$CHECK" compare "$LAB_DIR/m1.om" "$LAB_DIR/m1.status.json" "$LAB_DIR/m1.list.json") ||
    fail "ksctl metrics disagrees with status/list: $out"
fi
pass "ksctl metrics agrees with ksctl status --json and list --json on every number"
app_value() { python3 "$CHECK" value "$LAB_DIR/m1.om" "$1" "app=$(python3 -c 'import json,sys
print([a["cgroup"] for a in json.load(open(sys.argv[1]))["apps"] if int(sys.argv[2]) in a["pids"]][0])' \
  "$LAB_DIR/m1.list.json" "$app_pid")" profile=default; }
assert_ge "$(app_value killswitch_app_allowed_packets_total)" 5 "the app's allowed packets"
assert_eq "$(app_value killswitch_app_blocked_packets_total)" 3 "the app's dropped packets"
assert_eq "$(app_value killswitch_app_processes)" 1 "the app's processes"
grep -qF 'name="ev\"il\\\nname"' "$LAB_DIR/m1.om" ||
  fail "the app's name is not escaped as a label: $(grep killswitch_app_info "$LAB_DIR/m1.om")"
pass "the hostile name is one escaped label value"
assert_eq "$(tail -n 1 "$LAB_DIR/m1.om")" "# EOF" "the OpenMetrics text ends with # EOF"

# ---- 2. Prometheus's tools ------------------------------------------------------------------------
ks_ctl metrics --format prometheus >"$LAB_DIR/m1.prom"
if ! out=$("$PROMTOOL" check metrics <"$LAB_DIR/m1.prom" 2>&1); then
  fail "promtool check metrics: $out"
fi
assert_eq "$out" "" "promtool check metrics: no problem in the text 0.0.4 rendering"
# A timestamp on each sample (backfilling needs one); nothing else is changed.
awk '/^#/ { print; next } { print $0 " 1700000000" }' "$LAB_DIR/m1.om" >"$LAB_DIR/m1.om-ts"
out=$("$PROMTOOL" tsdb create-blocks-from openmetrics "$LAB_DIR/m1.om-ts" "$LAB_DIR/blocks" 2>&1) ||
  fail "Prometheus's OpenMetrics parser refused ksctl metrics: $out"
series=$(grep -c -v '^#' "$LAB_DIR/m1.om")
[[ $out == *" $series "* ]] || fail "not all $series samples were read: $out"
pass "Prometheus's OpenMetrics parser read all $series samples"

# ---- 3. the HTTP endpoint ----------------------------------------------------------------------
lab_spawn_client metrics-http systemd-socket-activate -l "127.0.0.1:$METRICS_PORT" --inetd -a \
  "$KS_KSCTL" --socket "$KS_SOCK" --pin-dir "$KS_PIN_DIR" metrics --http --timeout 2
http_listening() { lab_exec_client ss -Hltn "sport = :$METRICS_PORT" | grep -q LISTEN; }
_lab_wait_until 5 http_listening || fail "systemd-socket-activate does not listen: $(cat "$LAB_DIR/metrics-http.log")"
url=http://127.0.0.1:$METRICS_PORT/metrics
lab_exec_client curl -sS --max-time 10 -D "$LAB_DIR/h1.headers" -o "$LAB_DIR/h1.om" "$url" ||
  fail "curl $url failed"
head -n 1 "$LAB_DIR/h1.headers" | grep -q '^HTTP/1.0 200 ' || fail "not 200: $(cat "$LAB_DIR/h1.headers")"
grep -qiF 'Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8' "$LAB_DIR/h1.headers" ||
  fail "no OpenMetrics content type: $(cat "$LAB_DIR/h1.headers")"
assert_eq "$(tail -n 1 "$LAB_DIR/h1.om")" "# EOF" "HTTP: 200, OpenMetrics, ending with # EOF"
assert_eq "$(grep -c '^killswitch_daemon_up 1$' "$LAB_DIR/h1.om")" 1 "HTTP: the daemon is up"
lab_exec_client curl -sS --max-time 10 -H 'Accept: text/plain;version=0.0.4' -D "$LAB_DIR/h2.headers" \
  -o "$LAB_DIR/h2.prom" "$url"
grep -qiF 'Content-Type: text/plain; version=0.0.4' "$LAB_DIR/h2.headers" ||
  fail "Accept: text/plain did not get text 0.0.4: $(cat "$LAB_DIR/h2.headers")"
out=$("$PROMTOOL" check metrics <"$LAB_DIR/h2.prom" 2>&1) || fail "promtool check metrics (HTTP): $out"
pass "HTTP: Accept: text/plain gets text 0.0.4, which promtool accepts"

code() { lab_exec_client curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$@"; }
assert_eq "$(code "http://127.0.0.1:$METRICS_PORT/nope")" 404 "HTTP: another path is 404"
assert_eq "$(code -X POST "$url")" 405 "HTTP: POST is 405"
assert_eq "$(code -H "X-Big: $(head -c 10000 /dev/zero | tr '\0' x)" "$url")" 431 \
  "HTTP: a request over 8 KiB is 431"
# raw REQUEST: what comes back for bytes that are no HTTP request (bash's /dev/tcp).
# shellcheck disable=SC2016
raw() { lab_exec_client timeout 10 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"; printf "%b" "$2" >&3; head -n 1 <&3' _ "$METRICS_PORT" "$1"; }
[[ $(raw 'garbage\r\n\r\n') == "HTTP/1.0 400 "* ]] || fail "garbage did not get 400: $(raw 'garbage\r\n\r\n')"
pass "HTTP: garbage is 400"
t0=$(lab_now)
[[ $(raw '') == "HTTP/1.0 408 "* ]] || fail "a silent client did not get 408"
assert_between "$(lab_ms "$t0" "$(lab_now)")" 1900 $((6000 * LAB_WAIT_SCALE)) \
  "HTTP: a silent client gets 408 after the 2 s --timeout"

# ---- 4. a Prometheus server scrapes it --------------------------------------------------------
cat >"$LAB_DIR/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: killswitch
    static_configs:
      - targets: ['127.0.0.1:$METRICS_PORT']
EOF
lab_spawn_client prometheus "$PROMETHEUS" --config.file="$LAB_DIR/prometheus.yml" \
  --storage.tsdb.path="$LAB_DIR/prometheus-data" --web.listen-address="127.0.0.1:$PROM_PORT"
api() { lab_exec_client curl -sS --max-time 5 "http://127.0.0.1:$PROM_PORT/api/v1/$1" 2>/dev/null; }
# py EXPR: a Python expression over the JSON document on stdin (as `d`).
py() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
target() { api targets | py "[(t['health'], t['lastError']) for t in d['data']['activeTargets']]"; }
scraped() { [[ $(target 2>/dev/null) == "[('up', '')]" ]]; }
_lab_wait_until 30 scraped ||
  fail "Prometheus does not scrape the endpoint: $(target 2>&1 || tail -5 "$LAB_DIR/prometheus.log")"
pass "Prometheus scrapes the endpoint (OpenMetrics) without an error"
# query PROMQL EXPR [ARG...]: EXPR over the query's answer, ARGs as sys.argv[1:].
query() {
  local q=$1 expr=$2
  shift 2
  api "query?query=$q" | python3 -c "import json, sys; d = json.load(sys.stdin); print($expr)" "$@"
}
assert_eq "$(query killswitch_app_info "[r['metric']['name'] for r in d['data']['result']] == [sys.argv[1]]" "$evil_name")" \
  True "Prometheus has the app's hostile name intact as its label"
assert_eq "$(query killswitch_daemon_up "d['data']['result'][0]['value'][1]")" 1 "Prometheus: killswitch_daemon_up 1"

# ---- 5. ksd killed -----------------------------------------------------------------------------
ks_kill9
rc=0
ks_ctl metrics >"$LAB_DIR/down.om" 2>"$LAB_DIR/down.err" || rc=$?
assert_eq "$rc" 3 "ksd down: ksctl metrics exits 3"
assert_eq "$(python3 "$CHECK" value "$LAB_DIR/down.om" killswitch_daemon_up)" 0 "ksd down: killswitch_daemon_up 0"
assert_eq "$(python3 "$CHECK" value "$LAB_DIR/down.om" killswitch_programs_pinned)" 1 \
  "ksd down: the programs are still pinned"
assert_eq "$(tail -n 1 "$LAB_DIR/down.om")" "# EOF" "ksd down: still one whole exposition"
rc=0
ks_ctl metrics --format prometheus >"$LAB_DIR/down.prom" 2>/dev/null || rc=$?
assert_eq "$rc" 3 "ksd down: --format prometheus exits 3 too"
out=$("$PROMTOOL" check metrics <"$LAB_DIR/down.prom" 2>&1) || fail "promtool check metrics (ksd down): $out"
assert_eq "$out" "" "ksd down: promtool check metrics finds no problem"
lab_exec_client curl -sS --max-time 10 -D "$LAB_DIR/h3.headers" -o "$LAB_DIR/h3.om" "$url"
head -n 1 "$LAB_DIR/h3.headers" | grep -q '^HTTP/1.0 200 ' || fail "ksd down: not 200: $(cat "$LAB_DIR/h3.headers")"
assert_eq "$(python3 "$CHECK" value "$LAB_DIR/h3.om" killswitch_daemon_up)" 0 "ksd down: the endpoint says so"
daemon_down_seen() { [[ $(query killswitch_daemon_up "d['data']['result'][0]['value'][1]" 2>/dev/null) == 0 ]]; }
_lab_wait_until 10 daemon_down_seen || fail "Prometheus never saw killswitch_daemon_up 0"
scraped || fail "the target is not up with ksd down: $(target)"
pass "Prometheus sees the daemon down, the endpoint still up"
