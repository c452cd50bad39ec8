#!/usr/bin/env bash
# MX scheduling scale: does a large queue over many domains make delivery cost
# more per message?
#
#   bash bench/mx_scale.sh [--messages 100000,1000000] [--domains 10000]
#                          [--mx-hosts 8] [--connections 50] [--size 1024]
#                          [--timeout SECONDS]
#
# For each N in --messages (a fresh ringmaild and data_dir each time):
#   1. DNS (bench/dns_zone.py on 127.0.0.1, any port): d1..dD.example.test, each
#      MX -> one of mx0..mx{M-1}.bench.test -> 127.0.0.{2..M+1}; every domain resolves.
#   2. ringmaild, MX delivery to port P, where NOTHING listens yet: the first
#      connection to each MX host is refused, its destination is paused, and every
#      message is deferred ([queue] min_backoff = 1h, so none retries by itself).
#   3. inject: ringmail-blast send --connections C --domains D --messages N --size S;
#      then wait until ringmaild logged N deferrals (= every message was activated,
#      routed through the DNS cache and deferred once).
#   4. full queue: ringmaild's RSS (VmRSS, RssAnon, RssFile).
#   5. drain: start one ringmail-blast sink on port P of all M addresses
#      (--expect N) and `ringmailctl queue flush`; drain s = flush -> the sink
#      counted N. CPU s per 1000 messages (ringmaild utime+stime over the drain),
#      and the sink's per-second counts give the drain rate in the first and the
#      last quarter of the drain.
# Flat CPU per message and a flat drain rate across N (and within one drain) =
# no per-message cost that grows with the queue.
# Bounded: --timeout (default 600 s) per step; every process started here is
# stopped by pid and the temp dir (with the data_dirs) removed on exit (logs are
# kept on failure or with KEEP_TMP=1). Results: bench/results/mx_scale-<UTC>.json.
# Environment: RINGMAILD, RINGMAILCTL, BLAST, RESULTS_DIR, KEEP_TMP=1.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_NAME=mx_scale
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"

NLIST="100000,1000000"
DOMAINS=10000
MX_HOSTS=8
CONNS=50
SIZE=1024
TIMEOUT=600
# per destination (= MX host set) and shard. Not the default 20: with 8 MX hosts,
# 8 x 20 concurrent deliveries per shard exceed LMDB's 126 reader slots and
# messages get stuck (see docs/performance.md, "MX delivery")
DEST_CONNS=10

usage() { header_usage 31 "${1:-0}"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --messages)    NLIST="$2"; shift 2 ;;
        --domains)     DOMAINS="$2"; shift 2 ;;
        --mx-hosts)    MX_HOSTS="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --size)        SIZE="$2"; shift 2 ;;
        --timeout)     TIMEOUT="$2"; shift 2 ;;
        -h|--help)     usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
require_positive_ints DOMAINS MX_HOSTS CONNS SIZE TIMEOUT
[[ "$NLIST" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "--messages: a comma list of counts" >&2; exit 2; }
(( MX_HOSTS <= 250 )) || { echo "--mx-hosts must be at most 250" >&2; exit 2; }

RINGMAILCTL="${RINGMAILCTL:-$REPO_ROOT/build/tools/ringmailctl}"

# every process started here (PIDS) and the temp dir go on exit; the queues
# (GBs) never stay behind, even when the temp dir is kept
CLEANUP_WAIT=10
KEPT_NOTE=" (without the queues)"
cleanup_hook() { [[ -n "$TMP" && -d "$TMP" ]] && rm -rf "$TMP"/run-*/var; }
set_cleanup_traps

mx_addrs "$MX_HOSTS"      # MX_ADDRS: the MX hosts' addresses
count_in_log() { grep -c -F "$2" "$1" 2>/dev/null || true; }

# ------------------------------------------------------------------ a run ----
# run_one N -> $TMP/run-N.json
run_one() {
    local n=$1 base="$TMP/run-$1" port mx_port pid
    mkdir -p "$base/var"
    free_port port
    free_port mx_port   # nothing listens there until the drain
    {
        ringmail_toml_mx "$base/var" "$port" "$mx_port" "$DEST_CONNS" "$DNS_ADDR"
        cat <<EOF
[queue]
min_backoff = "1h"
max_backoff = "4h"
EOF
    } >"$base/ringmail.toml"
    cp "$base/ringmail.toml" "$TMP/ringmail.toml.txt"
    ringmaild_start "$base/ringmail.toml" "$base/ringmaild.log" "$port"
    pid=$SERVER_PID
    local nshards; nshards=$(grep -o 'ready: [0-9]* shards' "$base/ringmaild.log" | grep -o '[0-9]*' || echo null)

    # --- inject (MX hosts dead) ---
    local q0 c0 t0 t_inj blast_rc=0
    q0=$(dns_queries); c0=$(proc_ticks "$pid")
    local -a cmd=("$BLAST" send --to "127.0.0.1:$port" --connections "$CONNS" --messages "$n" --size "$SIZE"
                  --domains "$DOMAINS" --timeout 120 --json -q)
    log "[N=$n] inject: ${cmd[*]}"
    t0=$EPOCHREALTIME
    timeout "$TIMEOUT" "${cmd[@]}" >"$base/blast.json" 2>"$base/blast.err" || blast_rc=$?
    t_inj=$EPOCHREALTIME
    (( blast_rc == 0 )) || { tail -n 5 "$base/blast.err" >&2; log "[N=$n] WARNING: blast exit code $blast_rc"; }
    local inject_s; inject_s=$(fsub "$t_inj" "$t0")
    log "[N=$n] injected in ${inject_s} s; waiting until every message was deferred once"
    local deferred=0 deadline=$(( SECONDS + TIMEOUT )) last=-1 last_move=$SECONDS
    while :; do
        deferred=$(count_in_log "$base/ringmaild.log" "status=deferred")
        (( deferred >= n )) && break
        kill -0 "$pid" 2>/dev/null || die "[N=$n] ringmaild died (see $base/ringmaild.log)"
        if (( deferred != last )); then last=$deferred; last_move=$SECONDS; fi
        (( SECONDS - last_move < 60 )) || { log "[N=$n] WARNING: deferrals stuck at $deferred of $n for 60 s"; break; }
        (( SECONDS < deadline )) || { log "[N=$n] WARNING: only $deferred of $n deferred after ${TIMEOUT} s"; break; }
        sleep 1
    done
    local t_def=$EPOCHREALTIME c_def; c_def=$(proc_ticks "$pid")
    local defer_s; defer_s=$(fsub "$t_def" "$t0")
    local q_inj; q_inj=$(( $(dns_queries) - q0 ))
    sleep 2   # let the last commits land before measuring the full queue
    local rss anon file hwm_full
    rss=$(proc_status "$pid" VmRSS); anon=$(proc_status "$pid" RssAnon); file=$(proc_status "$pid" RssFile)
    hwm_full=$(proc_status "$pid" VmHWM)
    local du_kb; du_kb=$(du -sk "$base/var" | awk '{ print $1 }')
    log "[N=$n] $deferred deferred ${defer_s} s after the start; full queue: VmRSS $rss kB (anon $anon, file $file), data_dir $du_kb kB"

    # --- drain ---
    blast_sink_start "$base/sink" "$(mx_listen "$mx_port")" "$n" "$TIMEOUT"
    local sink_pid=$SINK_PID
    wait_listen "$mx_port" 10 || die "sink did not listen on port $mx_port"
    local c1 q1 t_flush sink_rc=0
    c1=$(proc_ticks "$pid"); q1=$(dns_queries)
    t_flush=$EPOCHREALTIME
    "$RINGMAILCTL" --config "$base/ringmail.toml" queue flush >"$base/flush.out" 2>&1 || die "ringmailctl queue flush failed: $(cat "$base/flush.out")"
    log "[N=$n] drain: sinks up on ${MX_ADDRS[0]}..${MX_ADDRS[-1]}:$mx_port, $RINGMAILCTL queue flush"
    # the sink exits by itself at N; stop it if its count has not moved for 60 s
    local cnt last_cnt=-1 moved=$SECONDS
    while kill -0 "$sink_pid" 2>/dev/null; do
        cnt=$(grep -o 'sink: [0-9]*s [0-9]* msgs' "$base/sink.err" 2>/dev/null | tail -n 1 | awk '{ print $3 }' || true)
        if [[ "${cnt:-0}" != "$last_cnt" ]]; then last_cnt=${cnt:-0}; moved=$SECONDS; fi
        if (( SECONDS - moved >= 60 )); then
            log "[N=$n] WARNING: the sink count is stuck at $last_cnt of $n for 60 s: stopping the drain"
            pkill -TERM -P "$sink_pid" 2>/dev/null || true   # the sink; its wrapper then stamps sink.end
            break
        fi
        sleep 1
    done
    wait "$sink_pid" || sink_rc=$?
    local t_end; t_end=$(sink_done_at "$base/sink.json" "$base/sink.end")
    local c2; c2=$(proc_ticks "$pid")
    local q_drain; q_drain=$(( $(dns_queries) - q1 ))
    local hwm_end; hwm_end=$(proc_status "$pid" VmHWM)
    local drain_s; drain_s=$(fsub "$t_end" "$t_flush")
    log "[N=$n] drained in ${drain_s} s (sink rc $sink_rc)"
    local removed; removed=$(count_in_log "$base/ringmaild.log" ": removed")
    local dnsfail; dnsfail=$(count_in_log "$base/ringmaild.log" "DNS temporary failure")
    local nwarn; nwarn=$(grep -c -E ': (error|fatal)' "$base/ringmaild.log" || true)
    grep -E "$RM_WARN_RE" "$base/ringmaild.log" | grep -v ' paused for ' | head -n 5 >"$base/warn.txt" || true
    ringmaild_stop 30
    (( STOP_RC == 0 )) || log "[N=$n] ringmaild exit status $STOP_RC $STOP_WHEN"
    # per-second sink progress: "sink: 12s 34567 msgs (2890/s) ..."
    grep -o 'sink: [0-9]*s [0-9]* msgs' "$base/sink.err" | awk '{ sub("s", "", $2); print $2, $3 }' >"$base/progress.txt" || true
    [[ -s $base/blast.json ]] || echo null >"$base/blast.json"
    [[ -s $base/sink.json ]] || echo null >"$base/sink.json"
    N=$n NSHARDS=$nshards INJECT_S=$inject_s DEFER_S=$defer_s DEFERRED=$deferred DRAIN_S=$drain_s \
    CPU_INJ=$(secs $(( c_def - c0 ))) CPU_DRAIN=$(secs $(( c2 - c1 ))) Q_INJ=$q_inj Q_DRAIN=$q_drain \
    RSS=$rss ANON=$anon FILE=$file HWM_FULL=$hwm_full HWM_END=$hwm_end DU_KB=$du_kb REMOVED=$removed \
    DNSFAIL=$dnsfail BLAST_RC=$blast_rc SINK_RC=$sink_rc EXIT=$STOP_RC ALIVE=$SERVER_ALIVE NERR=$nwarn BASE=$base \
    CMD="${cmd[*]}" OUTF="$TMP/run-$n.json" $PY - <<'PYEOF'
import json, os
E = os.environ
base = E["BASE"]
def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None
n = int(E["N"])
blast, sink = load(os.path.join(base, "blast.json")), load(os.path.join(base, "sink.json"))
prog = []
for line in open(os.path.join(base, "progress.txt")):
    t, m = line.split()
    prog.append((int(t), int(m)))
# drain rate in the first and the last quarter of the messages (from the sink's 1 s counts)
def rate_between(lo, hi):
    pts = [(t, m) for t, m in prog if lo <= m <= hi]
    if len(pts) < 2 or pts[-1][0] == pts[0][0]:
        return None
    return round((pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0]), 1)
k = lambda v: int(v) if v not in ("", "null", None) else None
doc = {
    "messages": n, "shards": k(E["NSHARDS"]), "command": E["CMD"],
    "inject_s": float(E["INJECT_S"]), "inject_msgs_per_s": round(n / float(E["INJECT_S"]), 1),
    "all_deferred_s": float(E["DEFER_S"]), "deferred_count": int(E["DEFERRED"]),
    "inject_cpu_s": float(E["CPU_INJ"]), "inject_cpu_s_per_1000": round(float(E["CPU_INJ"]) / n * 1000, 4),
    "inject_dns_queries": int(E["Q_INJ"]),
    "full_queue_rss_kb": k(E["RSS"]), "full_queue_rss_anon_kb": k(E["ANON"]), "full_queue_rss_file_kb": k(E["FILE"]),
    "full_queue_hwm_kb": k(E["HWM_FULL"]), "data_dir_kb": k(E["DU_KB"]),
    "drain_s": float(E["DRAIN_S"]), "drain_msgs_per_s": round(n / float(E["DRAIN_S"]), 1),
    "drain_cpu_s": float(E["CPU_DRAIN"]), "drain_cpu_s_per_1000": round(float(E["CPU_DRAIN"]) / n * 1000, 4),
    "drain_dns_queries": int(E["Q_DRAIN"]), "peak_rss_kb_end": k(E["HWM_END"]),
    "drain_rate_first_quarter": rate_between(0, n // 4), "drain_rate_last_quarter": rate_between(3 * n // 4, n),
    "drain_progress": prog,
    "removed_log_lines": int(E["REMOVED"] or 0), "dns_temp_failure_log_lines": int(E["DNSFAIL"] or 0), "error_log_lines": int(E["NERR"] or 0),
    "log_samples": [l.rstrip("\n") for l in open(os.path.join(base, "warn.txt"))],
    "blast_rc": int(E["BLAST_RC"]), "sink_rc": int(E["SINK_RC"]),
    "server_exit_status": int(E["EXIT"]), "server_alive_until_sigterm": E["ALIVE"] == "1",
    "blast": blast, "sink": sink,
}
s = sink or {}
b = blast or {}
if s.get("per_domain"):
    pd = s["per_domain"]
    doc["sink_domains"] = len(pd)
    s["per_domain"] = {"domains": len(pd), "min": min(pd.values()), "max": max(pd.values())}
doc["ok"] = bool(s.get("messages") == n and b.get("messages") == n and not b.get("errors") and not b.get("lost")
                 and not s.get("duplicates") and not s.get("checksum_failures") and doc["deferred_count"] >= n)
json.dump(doc, open(E["OUTF"], "w"), indent=1)
PYEOF
    rm -rf "${base:?}/var"
}

# -------------------------------------------------------------------- main ----
for b in "$BLAST" "$RINGMAILD" "$RINGMAILCTL"; do [[ -x $b ]] || die "$b not built: ninja -C build"; done
need_dnslib
make_tmp mx_scale
private_copy BLAST mxscale-blast
private_copy RINGMAILD mxscale-ringmaild
raise_nofile
check_cpu_busy
STAMP=$(utc_stamp)
log "messages=$NLIST domains=$DOMAINS mx_hosts=$MX_HOSTS conns=$CONNS size=$SIZE tmp=$TMP (free disk: $(df -h --output=avail "$TMP" | tail -n 1 | tr -d ' '))"
dns_zone_start "$DOMAINS" "$MX_HOSTS" 127.0.0.1:0
DNS_ADDR=$(cat "$TMP/dns.addr")
IFS=, read -r -a NS <<<"$NLIST"
for n in "${NS[@]}"; do
    settle
    run_one "$n"
done
kill -TERM "$DNS_PID" 2>/dev/null; wait "$DNS_PID" 2>/dev/null || true

mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/mx_scale-$STAMP.json"
STAMP=$STAMP BUSY=$BUSY_BEFORE TMPD=$TMP OUT=$OUT NLIST=$NLIST DOMAINS=$DOMAINS MX_HOSTS=$MX_HOSTS CONNS=$CONNS SIZE=$SIZE \
COMMIT="$(git_commit)" $PY - <<'PYEOF'
import json, os, platform
E = os.environ
runs = [json.load(open(os.path.join(E["TMPD"], f"run-{n}.json"))) for n in E["NLIST"].split(",")]
doc = {"benchmark": "mx_scale", "date_utc": E["STAMP"], "commit": E["COMMIT"],
       "machine": {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu_busy_pct_before": int(E["BUSY"])},
       "params": {"domains": int(E["DOMAINS"]), "mx_hosts": int(E["MX_HOSTS"]), "connections": int(E["CONNS"]),
                  "size": int(E["SIZE"])},
       "ringmail_config": open(os.path.join(E["TMPD"], "ringmail.toml.txt")).read(),
       "runs": runs}
json.dump(doc, open(E["OUT"], "w"), indent=1)
def f(v, spec="{:,.0f}"):
    return "-" if v is None else spec.format(v)
print()
print(f"MX scheduling scale: {E['DOMAINS']} domains -> {E['MX_HOSTS']} MX hosts, {E['CONNS']} connections, "
      f"{E['SIZE']}-byte messages, {os.cpu_count()} cores")
print("| N queued | inject msg/s | inject CPU s/1000 | full-queue RSS MiB (anon) | drain s | drain msg/s | "
      "first/last quarter msg/s | drain CPU s/1000 | ok |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for r in runs:
    print("| %s | %s | %s | %s (%s) | %s | %s | %s / %s | %s | %s |" % (
        f(r["messages"]), f(r["inject_msgs_per_s"]), f(r["inject_cpu_s_per_1000"], "{:.3f}"),
        f(r["full_queue_rss_kb"] / 1024 if r["full_queue_rss_kb"] else None, "{:,.1f}"),
        f(r["full_queue_rss_anon_kb"] / 1024 if r["full_queue_rss_anon_kb"] else None, "{:,.1f}"),
        f(r["drain_s"], "{:.1f}"), f(r["drain_msgs_per_s"]), f(r["drain_rate_first_quarter"]),
        f(r["drain_rate_last_quarter"]), f(r["drain_cpu_s_per_1000"], "{:.3f}"), "yes" if r["ok"] else "NO"))
if len(runs) >= 2:
    a, b = runs[0], runs[-1]
    print()
    print("N %s -> %s (x%.0f): drain CPU per message x%.2f, drain msg/s x%.2f, inject CPU per message x%.2f" % (
        f(a["messages"]), f(b["messages"]), b["messages"] / a["messages"],
        b["drain_cpu_s_per_1000"] / a["drain_cpu_s_per_1000"], b["drain_msgs_per_s"] / a["drain_msgs_per_s"],
        b["inject_cpu_s_per_1000"] / a["inject_cpu_s_per_1000"]))
for r in runs:
    if not r["ok"]:
        print(f"WARNING: N={r['messages']}: deferred {r['deferred_count']}, sink counted "
              f"{(r['sink'] or {}).get('messages')} (blast rc {r['blast_rc']}, sink rc {r['sink_rc']})")
    if r["dns_temp_failure_log_lines"]:
        print(f"WARNING: N={r['messages']}: {r['dns_temp_failure_log_lines']} deferrals for a DNS temporary failure "
              "(the test DNS server dropped or was slow to answer queries)")
    if r["server_exit_status"]:
        print(f"WARNING: N={r['messages']}: ringmaild exit status {r['server_exit_status']}")
    for l in r["log_samples"][:3]:
        print(f"  N={r['messages']} log: {l[:200]}")
PYEOF
print_footer "$OUT"
