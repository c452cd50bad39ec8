#!/usr/bin/env bash
# Side-by-side benchmark: ceiling (blast -> sink), ringmaild and Postfix as relays.
#
#   bash bench/suite.sh [--quick] [--sizes 1024,4096,100000,1048576] [--conns 50,500]
#                       [--only direct,ringmail,postfix] [--no-pool100] [--no-chart]
#
# For every message size and connection count, three cells are measured (plus
# ringmail with pool_size = 100 at >= 500 connections):
#   direct    ringmail-blast send -> ringmail-blast sink          (the ceiling)
#   ringmail  ringmail-blast send -> ringmaild -> ringmail-blast sink
#   postfix   ringmail-blast send -> private Postfix -> ringmail-blast sink
# Everything is on 127.0.0.1; every process started here is stopped by pid on exit.
# Messages per cell (full / --quick): 1 KiB and 4 KiB 20000 / 2000, 100 KB 3000 / 300,
# 1 MiB 500 / 50. Results: bench/results/suite-<UTC date>.json and .png (chart by
# bench/suite_chart.py, Debian's python3-matplotlib, installed here if missing).
#
# Per cell: end-to-end msg/s and MB/s (blast start -> sink has counted N, the sink
# runs with --expect N), blast's p99 latency of the final reply, peak RSS of the
# server (ringmaild: VmHWM; Postfix: max over 0.2 s samples of the sum of VmRSS of
# the master and its children, plus the same for Pss every 0.4 s), CPU seconds per
# 1000 messages of the server (ringmaild: utime+stime; Postfix: utime+stime of all
# live postfix processes + the master's cutime+cstime, before/after).
#
# Environment: RINGMAILD, BLAST (default build/tools/...), RM_SHARDS (ringmaild's shards,
# default one per core but one), RESULTS_DIR, KEEP_TMP=1,
# CELL_TIMEOUT (seconds, default 300).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_NAME=suite
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"

QUICK=0
SIZES="1024,4096,100000,1048576"
CONNS="50,500"
ONLY="direct,ringmail,postfix"
POOL100=1
CHART=1
CELL_TIMEOUT=${CELL_TIMEOUT:-300}

usage() { header_usage 16 "${1:-0}"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick)      QUICK=1; shift ;;
        --sizes)      SIZES="$2"; shift 2 ;;
        --conns)      CONNS="$2"; shift 2 ;;
        --only)       ONLY="$2"; shift 2 ;;
        --no-pool100) POOL100=0; shift ;;
        --no-chart)   CHART=0; shift ;;
        -h|--help)    usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done

messages_for() {   # size -> message count
    local n
    if   (( $1 <= 4096 ));   then n=20000
    elif (( $1 <= 200000 )); then n=3000
    else                          n=500
    fi
    (( QUICK )) && n=$(( n / 10 ))
    echo "$n"
}
want() { [[ ",$ONLY," == *",$1,"* ]]; }

# every process started here (PIDS), the Postfix instance and the temp dir go on exit
set_cleanup_traps

# ---------------------------------------------------------------- install ----
ensure_deps() {
    [[ -x $BLAST ]] || die "ringmail-blast not built ($BLAST): ninja -C build"
    if want ringmail; then [[ -x $RINGMAILD ]] || die "ringmaild not built ($RINGMAILD): ninja -C build"; fi
    local pkgs=()
    if want postfix && [[ ! -x /usr/sbin/postfix ]]; then pkgs+=(postfix); fi
    if (( CHART )) && ! $PY -c 'import matplotlib' 2>/dev/null; then pkgs+=(python3-matplotlib); fi
    (( ${#pkgs[@]} )) || return 0
    [[ $(id -u) -eq 0 ]] || die "missing ${pkgs[*]} and not root: apt-get install ${pkgs[*]}"
    log "installing Debian packages: ${pkgs[*]}"
    apt_install /tmp/suite-apt.log "${pkgs[@]}" || die "apt-get install failed, see /tmp/suite-apt.log"
}

# ------------------------------------------------------------ measurement ----
# run_cell SYSTEM LABEL SIZE CONNS N PORT SINK_PID SINK_JSON -> writes $TMP/cell-LABEL.json
# the server's pid is SERVER_PID (ringmaild) or PF_MASTER_PID (postfix); none for direct
run_cell() {
    local sys=$1 label=$2 size=$3 conns=$4 n=$5 port=$6 sink_pid=$7 sink_json=$8
    local blast_json="$TMP/blast-$label.json" t0 t_inj="" t_e2e="" blast_pid
    local -a cmd=("$BLAST" send --to "127.0.0.1:$port" --connections "$conns" --messages "$n"
                  --size "$size" --timeout 120 --json -q)
    log "[$label] ${cmd[*]}"
    server_measure_begin "$sys" "$label"
    t0=$EPOCHREALTIME
    # each wrapper subshell stamps the moment its child exited (no polling)
    blast_start "$label" $(( CELL_TIMEOUT + 30 )) "${cmd[@]}"
    blast_pid=$BLAST_PID
    local blast_rc=0 sink_rc=0
    wait "$blast_pid" || blast_rc=$?
    wait "$sink_pid" || sink_rc=$?
    t_inj=$(cat "$TMP/blast-$label.end")
    t_e2e=$(sink_done_at "$sink_json" "$TMP/sink-$label.end")
    server_measure_end "$sys" "$label"
    local cpu_ticks=$SERVER_CPU_TICKS
    [[ -s $blast_json ]] || echo null >"$blast_json"
    [[ -s $sink_json ]] || echo null >"$sink_json"
    (( blast_rc == 0 )) || { log "[$label] WARNING: blast exit code $blast_rc"; tail -n 5 "$TMP/blast-$label.err" >&2; }
    (( sink_rc == 0 )) || log "[$label] WARNING: sink exit code $sink_rc"
    local counted
    counted=$(grep -o '"messages":[0-9]*' "$sink_json" | head -n 1 | cut -d: -f2 || true)
    [[ "$counted" == "$n" ]] || log "[$label] WARNING: the sink counted ${counted:-?} of $n messages (cell not ok; a sink stopped by someone else's SIGTERM looks like this)"
    {
        printf '{"system": "%s", "label": "%s", "size": %s, "connections": %s, "messages": %s, ' "$sys" "$label" "$size" "$conns" "$n"
        printf '"pool_size": %s, ' "${POOL:-null}"
        printf '"t0": %s, "inject_s": %s, "e2e_s": %s, ' "$t0" "$(fsub "$t_inj" "$t0" 4)" "$(fsub "$t_e2e" "$t0" 4)"
        printf '"blast_rc": %s, "sink_rc": %s, ' "$blast_rc" "$sink_rc"
        printf '"server_peak_rss_kb": %s, "server_rss_end_kb": %s, "server_peak_pss_kb": %s, "server_max_processes": %s, ' \
            "${SERVER_HWM_KB:-null}" "${SERVER_RSS_KB:-null}" "${SERVER_PSS_KB:-null}" "${SERVER_NPROC:-null}"
        printf '"server_cpu_s": %s, ' "$(if [[ $cpu_ticks == null ]]; then echo null; else secs "$cpu_ticks"; fi)"
        printf '"blast": %s, "sink": %s}\n' "$(cat "$blast_json")" "$(cat "$sink_json")"
    } >"$TMP/cell-$label.json"
    log "[$label] inject $(fsub "$t_inj" "$t0") s, e2e $(fsub "$t_e2e" "$t0") s"
}

SINK_PORT="" SINK_JSON=""
sink_start() {   # $1 label, $2 expected messages: a blast sink on a free port (SINK_PORT, SINK_PID)
    free_port SINK_PORT
    SINK_JSON="$TMP/sink-$1.json"
    blast_sink_start "$TMP/sink-$1" "127.0.0.1:$SINK_PORT" "$2" "$CELL_TIMEOUT" -q
    wait_listen "$SINK_PORT" 10 || die "sink did not listen on $SINK_PORT"
}

# ------------------------------------------------------------------ cells ----
cell_direct() {   # size conns n
    local label="direct-$1-$2"
    sink_start "$label" "$3"
    POOL="" run_cell direct "$label" "$1" "$2" "$3" "$SINK_PORT" "$SINK_PID" "$SINK_JSON"
}

cell_ringmail() {   # size conns n pool
    local size=$1 conns=$2 n=$3 pool=$4
    local label="ringmail-p$pool-$size-$conns" base="$TMP/rm-p$pool-$size-$conns" port
    sink_start "$label" "$n"
    free_port port
    mkdir -p "$base/var"
    {
        ringmail_toml "$base/var" "$port" "127.0.0.1:$SINK_PORT"
        cat <<EOF
pool_size = $pool
[smtp]
max_connections = 20000
max_connections_per_ip = 0
EOF
    } >"$base/ringmail.toml"
    ringmaild_start "$base/ringmail.toml" "$base/ringmaild.log" "$port"
    POOL=$pool run_cell ringmail "$label" "$size" "$conns" "$n" "$port" "$SINK_PID" "$SINK_JSON"
    ringmaild_stop 2>/dev/null
    if (( STOP_RC != 0 )); then
        log "[$label] ringmaild exit status $STOP_RC $STOP_WHEN (128+N = signal N)"
        cp "$base/ringmaild.log" "$TMP/ringmaild-$label.log"
    fi
    echo "$STOP_RC $SERVER_ALIVE" >"$TMP/cell-$label.exit"
    local w
    w=$(grep -c -E "$RM_WARN_RE" "$base/ringmaild.log" || true)
    if (( w > 0 )); then
        log "[$label] ringmaild logged $w warning/error lines, e.g.:"
        grep -E "$RM_WARN_RE" "$base/ringmaild.log" | head -n 3 >&2
        cp "$base/ringmaild.log" "$TMP/ringmaild-$label.log"
    fi
    echo "$w" >"$TMP/cell-$label.warnings"
    rm -rf "${base:?}/var"
}

cell_postfix() {   # size conns n
    local size=$1 conns=$2 n=$3
    local label="postfix-$size-$conns" base="$TMP/pf-$size-$conns" port
    sink_start "$label" "$n"
    free_port port
    postfix_configure_relay "$base" "$port" "$SINK_PORT" 600 "message_size_limit = 20480000"
    postfix_start "$base" "$port"
    POOL=50 run_cell postfix "$label" "$size" "$conns" "$n" "$port" "$SINK_PID" "$SINK_JSON"
    postfix_stop
    postfix_log_warnings "$base/maillog" 3 >"$TMP/cell-$label.pfwarn" || true
    rm -rf "$base"
}

# -------------------------------------------------------------------- main ----
ensure_deps
make_tmp suite 755
# private copies (renamed, so that a "pkill ringmail-blast" elsewhere on a shared machine does not hit them)
private_copy BLAST suite-blast
if want ringmail; then private_copy RINGMAILD suite-ringmaild; fi
raise_nofile
check_cpu_busy
STAMP=$(utc_stamp)
log "quick=$QUICK sizes=$SIZES conns=$CONNS only=$ONLY nofile=$(ulimit -n) tmp=$TMP"
T_START=$SECONDS
IFS=, read -r -a SIZE_LIST <<<"$SIZES"
IFS=, read -r -a CONN_LIST <<<"$CONNS"
for conns in "${CONN_LIST[@]}"; do
    for size in "${SIZE_LIST[@]}"; do
        n=$(messages_for "$size")
        # settle before every cell: the previous cell's queue writes (Postfix's
        # files, ringmaild's spool) must not be flushed during this one
        if want direct; then settle; cell_direct "$size" "$conns" "$n"; fi
        if want ringmail; then
            settle; cell_ringmail "$size" "$conns" "$n" 50
            if (( POOL100 && conns >= 500 )); then settle; cell_ringmail "$size" "$conns" "$n" 100; fi
        fi
        if want postfix; then settle; cell_postfix "$size" "$conns" "$n"; fi
    done
done
log "all cells done in $(( SECONDS - T_START )) s"

mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/suite-$STAMP.json"
QUICK=$QUICK BUSY=$BUSY_BEFORE RM_SHARDS=$RM_SHARDS STAMP=$STAMP TMPD=$TMP OUT=$OUT PFVER="$(postfix_version)" COMMIT="$(git_commit)" \
$PY - <<'PYEOF'
import glob, json, os, platform
tmp = os.environ["TMPD"]
cells = []
for f in sorted(glob.glob(os.path.join(tmp, "cell-*.json"))):
    with open(f) as fh:
        c = json.load(fh)
    n = c["messages"]
    b, s = c["blast"] or {}, c["sink"] or {}
    c["e2e_msgs_per_s"] = round(n / c["e2e_s"], 1) if c["e2e_s"] > 0 else None
    c["e2e_mb_per_s"] = round(b.get("bytes", 0) / c["e2e_s"] / 1e6, 2) if c["e2e_s"] > 0 else None
    c["p99_ms"] = b.get("latency_p99_ms")
    c["cpu_s_per_1000"] = round(c["server_cpu_s"] / n * 1000, 3) if c["server_cpu_s"] is not None else None
    c["peak_rss_mib"] = round(c["server_peak_rss_kb"] / 1024, 1) if c["server_peak_rss_kb"] is not None else None
    c["peak_pss_mib"] = round(c["server_peak_pss_kb"] / 1024, 1) if c["server_peak_pss_kb"] is not None else None
    c["sink_count"] = s.get("messages")
    ok = (s.get("messages") == n and b.get("messages") == n and not b.get("errors") and not b.get("lost")
          and not s.get("duplicates") and not s.get("checksum_failures") and c["blast_rc"] == 0)
    c["ok"] = bool(ok)
    base = f.rsplit("/", 1)[1][len("cell-"):-len(".json")]
    p = os.path.join(tmp, "cell-" + base + ".exit")
    if os.path.exists(p):
        rc, alive = open(p).read().split()
        c["server_exit_status"] = int(rc)
        c["server_alive_until_sigterm"] = alive == "1"
    for ext, key in ((".warnings", "server_log_warnings"), (".pfwarn", "postfix_log_warnings")):
        p = os.path.join(tmp, "cell-" + base + ext)
        if os.path.exists(p):
            txt = open(p).read().strip()
            c[key] = int(txt) if ext == ".warnings" else [l for l in txt.splitlines() if l]
    cells.append(c)

def key(c):
    sysname = c["system"] if c["system"] != "ringmail" or c["pool_size"] == 50 else "ringmail_pool%d" % c["pool_size"]
    return (c["connections"], c["size"], sysname)
idx = {key(c): c for c in cells}
summary = []
for (conns, size, sysname), c in sorted(idx.items()):
    if sysname != "ringmail":
        continue
    row = {"connections": conns, "size": size}
    for other, name in (("postfix", "ringmail_over_postfix"), ("direct", "ringmail_over_ceiling")):
        o = idx.get((conns, size, other))
        row[name] = round(c["e2e_msgs_per_s"] / o["e2e_msgs_per_s"], 2) if o and o["e2e_msgs_per_s"] else None
    p100 = idx.get((conns, size, "ringmail_pool100"))
    if p100:
        row["pool100_over_pool50"] = round(p100["e2e_msgs_per_s"] / c["e2e_msgs_per_s"], 2)
    summary.append(row)

doc = {
    "benchmark": "suite", "date_utc": os.environ["STAMP"], "quick": os.environ["QUICK"] == "1",
    "commit": os.environ["COMMIT"],
    "machine": {"nproc": os.cpu_count(), "ringmaild_shards": int(os.environ["RM_SHARDS"]),
                "kernel": platform.release(), "postfix_version": os.environ["PFVER"],
                "cpu_busy_pct_before": int(os.environ["BUSY"])},
    "cells": cells, "ratios": summary,
}
with open(os.environ["OUT"], "w") as fh:
    json.dump(doc, fh, indent=1)

def sz(n):
    return {1024: "1 KiB", 4096: "4 KiB", 100000: "100 KB", 1048576: "1 MiB"}.get(n, str(n))
def fmt(v, f="{:,.0f}"):
    return "-" if v is None else f.format(v)
print()
print("| conns | size | system | msgs | msg/s | MB/s | p99 ms | peak RSS MiB | CPU s/1000 msg | ok |")
print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
order = {"direct": 0, "ringmail": 1, "ringmail_pool100": 2, "postfix": 3}
for k in sorted(idx, key=lambda k: (k[0], k[1], order.get(k[2], 9))):
    c = idx[k]
    rss = fmt(c["peak_rss_mib"], "{:,.1f}")
    if c["peak_pss_mib"] is not None:
        rss += " (Pss %s)" % fmt(c["peak_pss_mib"], "{:,.1f}")
    print("| %d | %s | %s | %d | %s | %s | %s | %s | %s | %s |" % (
        k[0], sz(k[1]), k[2], c["messages"], fmt(c["e2e_msgs_per_s"]), fmt(c["e2e_mb_per_s"], "{:,.1f}"),
        fmt(c["p99_ms"], "{:,.1f}"), rss, fmt(c["cpu_s_per_1000"], "{:.3f}"), "yes" if c["ok"] else "NO"))
crashes = [c["label"] for c in cells if c.get("server_exit_status")]
if crashes:
    print()
    print("ringmaild exited with a non-zero status (128+N = signal N) in %d of %d cells: %s" % (
        len(crashes), sum(1 for c in cells if c["system"] == "ringmail"),
        ", ".join("%s=%d" % (c["label"], c["server_exit_status"]) for c in cells if c.get("server_exit_status"))))
print()
print("ringmaild: %d shard(s) on %d cores (RM_SHARDS; blast and the sink share the machine)" % (
    int(os.environ["RM_SHARDS"]), os.cpu_count()))
print()
print("| conns | size | ringmail/Postfix | ringmail/ceiling | pool 100 / pool 50 |")
print("|---:|---:|---:|---:|---:|")
for r in summary:
    print("| %d | %s | %s | %s | %s |" % (r["connections"], sz(r["size"]), fmt(r["ringmail_over_postfix"], "{:.1f}x"),
          fmt(r["ringmail_over_ceiling"], "{:.2f}"), fmt(r.get("pool100_over_pool50"), "{:.2f}")))
PYEOF
print_footer "$OUT"
if (( CHART )); then
    $PY "$REPO_ROOT/bench/suite_chart.py" "$OUT" "${OUT%.json}.png" && echo "chart:   ${OUT#"$REPO_ROOT"/}" | sed 's/\.json$/.png/'
fi
