#!/usr/bin/env bash
# MX delivery benchmark: ringmaild vs Postfix, both delivering by MX lookup.
#
#   bash bench/mx_relay.sh [--rm-messages N] [--pf-messages N] [--connections C]
#                          [--size BYTES] [--domains D] [--mx-hosts M]
#                          [--only ringmail|postfix] [--timeout SECONDS]
#
#   ringmail-blast send --domains D -> ringmaild | private Postfix -> MX hosts
#
# One DNS server (bench/dns_zone.py, dnslib) serves d1..dD.example.test (blast's
# recipient domains), each MX -> mx{0..M-1}.bench.test -> 127.0.0.{2..M+1}.
# One `ringmail-blast sink` listens on port P of all M addresses and counts
# per recipient domain. Both systems use that DNS server and deliver to port P:
# ringmaild through `[dns] servers` and `[delivery] smtp_port`, Postfix through
# /etc/resolv.conf and `smtp_tcp_port`. Postfix cannot be told another resolver,
# so the script runs in a private mount namespace (unshare -m, root needed) in
# which /etc/resolv.conf is a bind mount of "nameserver $DNS_ADDR"; the DNS server
# listens on $DNS_ADDR:53 (default 127.0.0.153). Nothing outside the script sees
# the changed resolv.conf.
#
# Per system: end-to-end msg/s (blast start -> the sink counted N and exited),
# inject msg/s, server CPU s per 1000 messages, peak RSS (Postfix: summed VmRSS
# and Pss of all its processes), DNS queries and the DNS server's CPU.
# Defaults: 400,000 messages for ringmail, 15,000 for Postfix (each ~20 s
# here), 50 connections, 4 KiB, 1000 domains, 8 MX hosts; every phase is bounded
# by --timeout (default 300 s). Results: bench/results/mx_relay-<UTC>.json.
# Environment: RINGMAILD, BLAST, RM_SHARDS (default one per core but one), RESULTS_DIR,
# KEEP_TMP=1, DNS_ADDR.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_NAME=mx_relay
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"

RM_N=400000
PF_N=15000
CONNS=50
SIZE=4096
DOMAINS=1000
MX_HOSTS=8
ONLY=""
TIMEOUT=300
DNS_ADDR=${DNS_ADDR:-127.0.0.153}
# outbound connection budget, the same for both: ringmail's cap is per
# destination (= MX host set) and per shard; Postfix's is its smtp processes
RM_DEST_CONNS=10

usage() { header_usage 28 "${1:-0}"; }
ARGS=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rm-messages) RM_N="$2"; shift 2 ;;
        --pf-messages) PF_N="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --size)        SIZE="$2"; shift 2 ;;
        --domains)     DOMAINS="$2"; shift 2 ;;
        --mx-hosts)    MX_HOSTS="$2"; shift 2 ;;
        --only)        ONLY="$2"; shift 2 ;;
        --timeout)     TIMEOUT="$2"; shift 2 ;;
        -h|--help)     usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
case "$ONLY" in ""|ringmail|postfix) ;; *) echo "--only must be ringmail or postfix" >&2; exit 2 ;; esac
require_positive_ints RM_N PF_N CONNS SIZE DOMAINS MX_HOSTS TIMEOUT
(( MX_HOSTS <= 250 )) || { echo "--mx-hosts must be at most 250" >&2; exit 2; }

# ------------------------------------------------ private mount namespace ----
if [[ "${MXBENCH_IN_NS:-}" != 1 ]]; then
    [[ $(id -u) -eq 0 ]] || { echo "mx_relay.sh needs root (a private mount namespace and a DNS server on port 53)" >&2; exit 2; }
    exec unshare --mount --propagation private env MXBENCH_IN_NS=1 bash "$0" "${ARGS[@]}"
fi

want() { [[ -z "$ONLY" || "$ONLY" == "$1" ]]; }

# every process started here (PIDS), the Postfix instance and the temp dir go on exit
set_cleanup_traps

# ------------------------------------------------------------ measurement ----
dns_stats() {   # -> "<queries> <cpu ticks>" of the DNS server now
    local q
    q=$(dns_queries)
    echo "$q $(proc_ticks "$DNS_PID")"
}

# ------------------------------------------------------------- DNS, sinks ----
mx_addrs "$MX_HOSTS"

SINK_JSON=""
sink_start() {   # $1 label, $2 expected messages: one blast sink on MX_PORT of every MX address
    SINK_JSON="$TMP/sink-$1.json"
    blast_sink_start "$TMP/sink-$1" "$(mx_listen "$MX_PORT")" "$2" "$TIMEOUT" -q
    wait_listen "$MX_PORT" 10 || die "sink did not listen on port $MX_PORT"
}

# run_load SYS LABEL N PORT -> $TMP/cell-LABEL.json
run_load() {
    local sys=$1 label=$2 n=$3 port=$4
    local blast_json="$TMP/blast-$label.json" t0 d0 d1 blast_pid blast_rc=0 sink_rc=0
    local -a cmd=("$BLAST" send --to "127.0.0.1:$port" --connections "$CONNS" --messages "$n"
                  --size "$SIZE" --domains "$DOMAINS" --timeout 120 --json -q)
    log "[$label] ${cmd[*]}"
    read -r d0 _ < <(dns_stats)
    local dcpu0; dcpu0=$(proc_ticks "$DNS_PID")
    server_measure_begin "$sys" "$label"
    t0=$EPOCHREALTIME
    blast_start "$label" $(( TIMEOUT + 30 )) "${cmd[@]}"
    blast_pid=$BLAST_PID
    wait "$blast_pid" || blast_rc=$?
    wait "$SINK_PID" || sink_rc=$?
    local t_inj t_e2e; t_inj=$(cat "$TMP/blast-$label.end"); t_e2e=$(sink_done_at "$SINK_JSON" "$TMP/sink-$label.end")
    server_measure_end "$sys" "$label"
    read -r d1 _ < <(dns_stats)
    local dcpu1; dcpu1=$(proc_ticks "$DNS_PID")
    [[ -s $blast_json ]] || echo null >"$blast_json"
    [[ -s $SINK_JSON ]] || echo null >"$SINK_JSON"
    (( blast_rc == 0 )) || { log "[$label] WARNING: blast exit code $blast_rc"; tail -n 5 "$TMP/blast-$label.err" >&2; }
    (( sink_rc == 0 )) || log "[$label] WARNING: sink exit code $sink_rc"
    {
        printf '{"system": "%s", "label": "%s", "messages": %s, "t0": %s, ' "$sys" "$label" "$n" "$t0"
        printf '"inject_s": %s, "e2e_s": %s, "blast_rc": %s, "sink_rc": %s, ' \
            "$(fsub "$t_inj" "$t0" 4)" "$(fsub "$t_e2e" "$t0" 4)" "$blast_rc" "$sink_rc"
        printf '"server_cpu_s": %s, "server_peak_rss_kb": %s, "server_peak_pss_kb": %s, "server_max_processes": %s, ' \
            "$(secs "$SERVER_CPU_TICKS")" "${SERVER_HWM_KB:-null}" "${SERVER_PSS_KB:-null}" "${SERVER_NPROC:-null}"
        printf '"dns_queries": %s, "dns_cpu_s": %s, ' "$(( d1 - d0 ))" "$(secs $(( dcpu1 - dcpu0 )))"
        printf '"command": "%s", "blast": %s, "sink": %s}\n' "${cmd[*]}" "$(cat "$blast_json")" "$(cat "$SINK_JSON")"
    } >"$TMP/cell-$label.json"
    log "[$label] inject $(fsub "$t_inj" "$t0" 2) s, e2e $(fsub "$t_e2e" "$t0" 2) s, DNS queries $(( d1 - d0 ))"
}

# ---------------------------------------------------------------- ringmail ----
phase_ringmail() {
    local base="$TMP/ringmail" port
    free_port port
    sink_start ringmail "$RM_N"
    mkdir -p "$base/var"
    ringmail_toml_mx "$base/var" "$port" "$MX_PORT" "$RM_DEST_CONNS" "$DNS_ADDR:53" >"$base/ringmail.toml"
    cp "$base/ringmail.toml" "$TMP/ringmail.toml.txt"
    ringmaild_start "$base/ringmail.toml" "$base/ringmaild.log" "$port"
    NSHARDS=$(grep -o 'ready: [0-9]* shards' "$base/ringmaild.log" | grep -o '[0-9]*' || echo '?')
    run_load ringmail ringmail "$RM_N" "$port"
    ringmaild_stop
    (( STOP_RC == 0 )) || log "[ringmail] ringmaild exit status $STOP_RC $STOP_WHEN"
    echo "$STOP_RC $SERVER_ALIVE" >"$TMP/ringmail.exit"
    grep -E "$RM_WARN_RE" "$base/ringmaild.log" | head -n 5 >"$TMP/ringmail.warn" || true
    grep -c -E "$RM_WARN_RE" "$base/ringmaild.log" >"$TMP/ringmail.nwarn" || true
    grep -c 'status=deferred' "$base/ringmaild.log" >"$TMP/ringmail.deferred" || true
    grep -c 'DNS temporary failure' "$base/ringmaild.log" >"$TMP/ringmail.dnsfail" || true
    rm -rf "${base:?}/var"
}

# ----------------------------------------------------------------- postfix ----
PF_DNS_STATUS="not tried"
phase_postfix() {
    local base="$TMP/postfix" port
    # 1. Postfix's resolver reads /etc/resolv.conf: in this namespace, ours.
    printf 'nameserver %s\noptions timeout:2 attempts:2\n' "$DNS_ADDR" >"$TMP/resolv.conf"
    if ! mount --bind "$TMP/resolv.conf" /etc/resolv.conf 2>"$TMP/mount.err"; then
        PF_DNS_STATUS="cannot bind-mount /etc/resolv.conf in the private namespace: $(cat "$TMP/mount.err")"
        return 1
    fi
    local got
    got=$(getent ahostsv4 mx0.bench.test 2>/dev/null | awk 'NR == 1 { print $1 }')
    if [[ "$got" != "${MX_ADDRS[0]}" ]]; then
        PF_DNS_STATUS="the libc resolver in the namespace does not use the test DNS (mx0.bench.test -> '${got}')"
        umount /etc/resolv.conf 2>/dev/null || true
        return 1
    fi
    PF_DNS_STATUS="ok (resolv.conf bind-mounted: nameserver $DNS_ADDR; mx0.bench.test -> $got)"
    free_port port
    sink_start postfix "$PF_N"
    local pf_smtp_procs=$(( RM_DEST_CONNS * MX_HOSTS * NSHARDS ))
    postfix_configure "$base" "$port" \
        "relayhost =" \
        "default_transport = smtp" \
        "smtp_host_lookup = dns" \
        "disable_dns_lookups = no" \
        "smtp_tcp_port = $MX_PORT" \
        "inet_interfaces = 127.0.0.1" \
        "default_process_limit = $(( pf_smtp_procs + CONNS + 50 ))" \
        "default_destination_concurrency_limit = 20" \
        "smtp_destination_concurrency_limit = 20"
    postconf -c "$base/etc" -F "smtp/unix/process_limit = $pf_smtp_procs"
    postconf -c "$base/etc" -M smtp/unix >>"$TMP/postfix-main.cf.txt"
    postfix_start "$base" "$port"
    run_load postfix postfix "$PF_N" "$port"
    postfix_stop
    cp "$base/maillog" "$TMP/postfix-maillog" 2>/dev/null || true
    grep -c 'status=deferred' "$base/maillog" >"$TMP/postfix.deferred" 2>/dev/null || true
    postfix_log_warnings "$base/maillog" 5 >"$TMP/postfix.warn" || true
    if grep -q -E 'Host or domain name not found|Name service error' "$base/maillog" 2>/dev/null; then
        PF_DNS_STATUS+="; BUT Postfix logged DNS lookup failures: $(grep -m1 -o -E '(Host or domain name not found|Name service error)[^)]*' "$base/maillog")"
    fi
    umount /etc/resolv.conf 2>/dev/null || true
    rm -rf "$base"
}

# -------------------------------------------------------------------- main ----
[[ -x $BLAST ]] || die "ringmail-blast not built ($BLAST): ninja -C build"
if want ringmail; then [[ -x $RINGMAILD ]] || die "ringmaild not built ($RINGMAILD): ninja -C build"; fi
if want postfix; then [[ -x /usr/sbin/postfix ]] || die "postfix is not installed (bash bench/suite.sh --only postfix installs it, or apt-get install postfix)"; fi
need_dnslib
make_tmp mx_relay 755
private_copy BLAST mxbench-blast
if want ringmail; then private_copy RINGMAILD mxbench-ringmaild; fi
raise_nofile
NSHARDS=$RM_SHARDS             # ringmaild's shards (bench/lib.sh)
free_port MX_PORT
check_cpu_busy
STAMP=$(utc_stamp)
log "ringmail N=$RM_N postfix N=$PF_N conns=$CONNS size=$SIZE domains=$DOMAINS mx_hosts=$MX_HOSTS (${MX_ADDRS[0]}..${MX_ADDRS[-1]}:$MX_PORT) dns=$DNS_ADDR:53 tmp=$TMP"
dns_zone_start "$DOMAINS" "$MX_HOSTS" "$DNS_ADDR:53" "on $DNS_ADDR:53 (in use? set DNS_ADDR to another 127.x address)"
RM_STATUS="skipped" PF_STATUS="skipped"
if want ringmail; then settle; phase_ringmail; RM_STATUS="ok"; fi
if want postfix; then
    settle
    if phase_postfix; then PF_STATUS="ok"
    else
        PF_STATUS="no DNS"
        log "POSTFIX NOT MEASURED: Postfix cannot be made to use the test DNS here: $PF_DNS_STATUS"
    fi
fi
kill -TERM "$DNS_PID" 2>/dev/null; wait "$DNS_PID" 2>/dev/null || true

mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/mx_relay-$STAMP.json"
BUSY=$BUSY_BEFORE STAMP=$STAMP TMPD=$TMP OUT=$OUT RM_STATUS=$RM_STATUS PF_STATUS=$PF_STATUS \
PF_DNS_STATUS="$PF_DNS_STATUS" CONNS=$CONNS SIZE=$SIZE DOMAINS=$DOMAINS MX_HOSTS=$MX_HOSTS MX_PORT=$MX_PORT \
DNS_ADDR=$DNS_ADDR RM_DEST_CONNS=$RM_DEST_CONNS NSHARDS=$NSHARDS PFVER="$(postfix_version)" COMMIT="$(git_commit)" \
$PY - <<'PYEOF'
import json, os, platform
E = os.environ
tmp = E["TMPD"]
def readf(name, default=""):
    p = os.path.join(tmp, name)
    return open(p).read().strip() if os.path.exists(p) else default
cells = {}
for sysname in ("ringmail", "postfix"):
    p = os.path.join(tmp, f"cell-{sysname}.json")
    if not os.path.exists(p):
        continue
    c = json.load(open(p))
    n = c["messages"]
    b, s = c["blast"] or {}, c["sink"] or {}
    c["e2e_msgs_per_s"] = round(n / c["e2e_s"], 1) if c["e2e_s"] > 0 else None
    c["inject_msgs_per_s"] = round(n / c["inject_s"], 1) if c["inject_s"] > 0 else None
    c["cpu_s_per_1000"] = round(c["server_cpu_s"] / n * 1000, 3)
    c["peak_rss_mib"] = round(c["server_peak_rss_kb"] / 1024, 1) if c["server_peak_rss_kb"] is not None else None
    c["peak_pss_mib"] = round(c["server_peak_pss_kb"] / 1024, 1) if c["server_peak_pss_kb"] is not None else None
    per = s.get("per_domain") or {}
    c["sink_count"] = s.get("messages")
    c["sink_domains"] = len(per)
    c["sink_connections"] = s.get("connections")
    c["dns_queries_per_1000"] = round(c["dns_queries"] / n * 1000, 1)
    c["deferred_log_lines"] = int(readf(f"{sysname}.deferred", "0") or 0)
    c["dns_temp_failure_log_lines"] = int(readf(f"{sysname}.dnsfail", "0") or 0)
    c["log_warnings"] = [l for l in readf(f"{sysname}.warn").splitlines() if l]
    if sysname == "ringmail":
        ex = readf("ringmail.exit", "").split()
        if ex:
            c["server_exit_status"], c["server_alive_until_sigterm"] = int(ex[0]), ex[1] == "1"
    c["ok"] = bool(s.get("messages") == n and b.get("messages") == n and not b.get("errors")
                   and not b.get("lost") and not s.get("duplicates") and not s.get("checksum_failures")
                   and c["blast_rc"] == 0 and c["sink_rc"] == 0)
    # the full per-domain map is long: keep min/max
    if per:
        c["sink"]["per_domain"] = {"domains": len(per), "min": min(per.values()), "max": max(per.values())}
    cells[sysname] = c
ratio = cpu_ratio = None
if "ringmail" in cells and "postfix" in cells:
    r, p = cells["ringmail"], cells["postfix"]
    if r["e2e_msgs_per_s"] and p["e2e_msgs_per_s"]:
        ratio = round(r["e2e_msgs_per_s"] / p["e2e_msgs_per_s"], 2)
    if r["cpu_s_per_1000"]:
        cpu_ratio = round(p["cpu_s_per_1000"] / r["cpu_s_per_1000"], 1)
doc = {
    "benchmark": "mx_relay", "date_utc": E["STAMP"], "commit": E["COMMIT"],
    "machine": {"nproc": os.cpu_count(), "kernel": platform.release(), "postfix_version": E["PFVER"],
                "cpu_busy_pct_before": int(E["BUSY"])},
    "params": {"connections": int(E["CONNS"]), "size": int(E["SIZE"]), "domains": int(E["DOMAINS"]),
               "mx_hosts": int(E["MX_HOSTS"]), "mx_port": int(E["MX_PORT"]), "dns": E["DNS_ADDR"] + ":53",
               "ringmail_shards": E["NSHARDS"], "ringmail_delivery_max_connections": int(E["RM_DEST_CONNS"])},
    "ringmail_status": E["RM_STATUS"], "postfix_status": E["PF_STATUS"], "postfix_dns": E["PF_DNS_STATUS"],
    "ringmail_config": readf("ringmail.toml.txt"), "postfix_config": readf("postfix-main.cf.txt"),
    "cells": cells, "ratio_e2e_ringmail_over_postfix": ratio, "ratio_cpu_postfix_over_ringmail": cpu_ratio,
}
with open(E["OUT"], "w") as fh:
    json.dump(doc, fh, indent=1)

def fmt(v, f="{:,.0f}"):
    return "-" if v is None else f.format(v)
print()
print(f"MX delivery: {E['DOMAINS']} domains -> {E['MX_HOSTS']} MX hosts (one sink, port {E['MX_PORT']}), "
      f"{E['CONNS']} connections, {E['SIZE']}-byte messages, {os.cpu_count()} cores")
print("| system | msgs | e2e msg/s | inject msg/s | CPU s/1000 msg | peak RSS MiB | DNS queries/1000 msg | DNS server CPU s | sink domains | ok |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for name in ("ringmail", "postfix"):
    c = cells.get(name)
    if not c:
        st = E["RM_STATUS"] if name == "ringmail" else E["PF_STATUS"]
        print(f"| {name} | {st} | | | | | | | | |")
        continue
    rss = fmt(c["peak_rss_mib"], "{:,.1f}")
    if c["peak_pss_mib"] is not None:
        rss += " (Pss %s)" % fmt(c["peak_pss_mib"], "{:,.1f}")
    print("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        name, c["messages"], fmt(c["e2e_msgs_per_s"]), fmt(c["inject_msgs_per_s"]), fmt(c["cpu_s_per_1000"], "{:.3f}"),
        rss, fmt(c["dns_queries_per_1000"], "{:,.1f}"), fmt(c["dns_cpu_s"], "{:.2f}"), c["sink_domains"],
        "yes" if c["ok"] else "NO"))
print()
print("ratio ringmail/Postfix, e2e msg/s: %s   CPU per message Postfix/ringmail: %s" % (
    fmt(ratio, "{:.1f}x"), fmt(cpu_ratio, "{:.1f}x")))
print("Postfix and the test DNS: " + E["PF_DNS_STATUS"])
for name, c in cells.items():
    if not c["ok"]:
        print(f"WARNING: {name}: sink counted {c['sink_count']} of {c['messages']} (blast rc {c['blast_rc']}, sink rc {c['sink_rc']})")
    if c.get("server_exit_status"):
        print(f"WARNING: ringmaild exit status {c['server_exit_status']}")
    if c["deferred_log_lines"]:
        print(f"note: {name} logged {c['deferred_log_lines']} status=deferred lines")
    for l in c["log_warnings"][:3]:
        print(f"  {name} log: {l[:200]}")
PYEOF
print_footer "$OUT"
