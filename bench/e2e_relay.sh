#!/usr/bin/env bash
# End-to-end relay benchmark: ringmaild vs Postfix, both relaying to smtp-sink.
#
#   bash bench/e2e_relay.sh [--messages N] [--sessions S] [--size BYTES]
#                           [--only ringmail|postfix] [--sink count|smtp-sink]
#                           [--timeout SECONDS]
#
# Everything runs on loopback (127.0.0.1) only. Each phase:
#   1. a fresh sink on a free port = final destination. Default: bench/count_sink.c
#      (compiled with cc into the temp dir; ~40% less CPU per message than
#      smtp-sink, and it records the exact time of the last message);
#      --sink smtp-sink uses Postfix's smtp-sink -c (running counter) instead
#   2. the system under test (Postfix private instance / ringmaild) relaying to it
#   3. smtp-source -d -s S -m N -l BYTES injects into the system under test
#   inject s  = wall time of smtp-source (all N messages got their 250)
#   e2e s     = from the start of smtp-source until the sink has counted N
# A "direct" phase (smtp-source -> smtp-sink, no relay) verifies the counting
# method and gives the ceiling of the load generator on this machine.
#
# Environment overrides: RINGMAILD (default build/tools/ringmaild), RM_SHARDS
# (ringmaild's shards, default one per core but one),
# RESULTS_DIR (default bench/results), KEEP_TMP=1 to keep the temp dir.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_NAME=e2e
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"

MESSAGES=20000
SESSIONS=50
SIZE=4096
ONLY=""
SINK=count           # count (bench/count_sink.c, compiled here) | smtp-sink (Postfix's)
TIMEOUT=900          # hard deadline for one phase (seconds)
STALL=60             # fail a phase if the sink count does not move for this long

usage() { header_usage 5 "${1:-0}"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --messages) MESSAGES="$2"; shift 2 ;;
        --sessions) SESSIONS="$2"; shift 2 ;;
        --size)     SIZE="$2"; shift 2 ;;
        --only)     ONLY="$2"; shift 2 ;;
        --timeout)  TIMEOUT="$2"; shift 2 ;;
        --sink)     SINK="$2"; shift 2 ;;
        -h|--help)  usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
case "$ONLY" in ""|ringmail|postfix) ;; *) echo "--only must be ringmail or postfix" >&2; exit 2 ;; esac
case "$SINK" in count|smtp-sink) ;; *) echo "--sink must be count or smtp-sink" >&2; exit 2 ;; esac
require_positive_ints MESSAGES SESSIONS SIZE TIMEOUT

SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink
SENDER="bench-sender@source.example.test"
RCPT="bench-rcpt@dest.example.test"

now() { echo "$EPOCHREALTIME"; }                       # bash >= 5

# every process started here (PIDS, no children of their own to stop first),
# the Postfix instance and the temp dir go on exit
CLEANUP_CHILDREN=0
set_cleanup_traps

# ---------------------------------------------------------------- install ----
ensure_deps() {
    if [[ -x $SMTP_SOURCE && -x $SMTP_SINK && -x /usr/sbin/postfix ]]; then return; fi
    [[ $(id -u) -eq 0 ]] || die "postfix (smtp-source/smtp-sink) is missing and we are not root: apt-get install postfix"
    command -v apt-get >/dev/null || die "postfix is missing and this is not a Debian-like system"
    log "installing Debian package postfix (main_mailer_type = No configuration)"
    apt_install /tmp/e2e_relay-apt.log postfix || die "apt-get install postfix failed, see /tmp/e2e_relay-apt.log"
    [[ -x $SMTP_SOURCE && -x $SMTP_SINK ]] || die "smtp-source/smtp-sink not found after install"
}

# -------------------------------------------------------------------- sink ----
SINK_PORT="" SINK_OUT="" SINK_PID="" SINK_CMD=""
COUNT_SINK_BIN=""
build_count_sink() {
    command -v cc >/dev/null || { log "cc not found: using --sink smtp-sink"; SINK=smtp-sink; return; }
    COUNT_SINK_BIN="$TMP/count_sink"
    cc -O2 -o "$COUNT_SINK_BIN" "$REPO_ROOT/bench/count_sink.c" || die "cannot compile bench/count_sink.c"
}
sink_start() {    # $1 = label
    free_port SINK_PORT
    SINK_OUT="$TMP/sink-$1.out"
    if [[ $SINK == count ]]; then
        # writes "<count> <unix time of last message>" to SINK_OUT; stops by itself after TIMEOUT+60 s
        "$COUNT_SINK_BIN" 127.0.0.1 "$SINK_PORT" "$SINK_OUT" $(( TIMEOUT + 60 )) 2>"$TMP/sink-$1.err" &
        SINK_CMD="bench/count_sink 127.0.0.1 <port> <countfile>"
    else
        # -c: running counters "sess=.. quit=.. mesg=N\r" written when "." is received.
        # -u nobody: required when started as root. -m: max simultaneous connections.
        local user_opt=()
        [[ $(id -u) -eq 0 ]] && user_opt=(-u nobody)
        "$SMTP_SINK" -c "${user_opt[@]}" -m 1024 -h "sink.example.test" \
            "127.0.0.1:$SINK_PORT" 1024 >"$SINK_OUT" 2>"$TMP/sink-$1.err" &
        SINK_CMD="$SMTP_SINK -c ${user_opt[*]} -m 1024 127.0.0.1:<port> 1024"
    fi
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_banner "$SINK_PORT" 10 || die "sink did not come up on port $SINK_PORT"
    # the readiness probe itself is a session but never reaches ".", so the count stays 0
}
sink_count() {
    local last
    if [[ $SINK == count ]]; then
        read -r last _ <"$SINK_OUT" 2>/dev/null || last=0
        echo $(( 10#${last:-0} ))
        return
    fi
    last=$(tail -c 200 "$SINK_OUT" 2>/dev/null | tr '\r' '\n' | grep 'mesg=' | tail -n 1)
    last=${last##*mesg=}
    echo "${last:-0}"
}
sink_last_time() {   # exact arrival time of the last message (count_sink only)
    local c t
    read -r c t <"$SINK_OUT" 2>/dev/null || return 1
    echo "$t"
}
sink_stop() {
    kill -TERM "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
}

# ----------------------------------------------------------------- measure ----
# run_load LABEL PORT -> sets R_INJECT_S R_E2E_S R_COUNT R_INJECT_RATE R_E2E_RATE
run_load() {
    local label=$1 port=$2
    local -a cmd=("$SMTP_SOURCE" -d -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE"
                  -M bench-client.example.test -f "$SENDER" -t "$RCPT" "127.0.0.1:$port")
    LAST_CMD="${cmd[*]}"
    log "[$label] $LAST_CMD"
    local t0 t_inj="" t_e2e="" c=0 last_c=-1 last_move=$SECONDS start=$SECONDS src_rc=""
    t0=$(now)
    "${cmd[@]}" >"$TMP/source-$label.out" 2>"$TMP/source-$label.err" &
    local src=$!
    PIDS+=("$src")
    while :; do
        if [[ -z "$t_inj" ]] && ! kill -0 "$src" 2>/dev/null; then
            t_inj=$(now)
            src_rc=0; wait "$src" || src_rc=$?
            [[ $src_rc -eq 0 ]] || { cat "$TMP/source-$label.err" >&2; die "[$label] smtp-source failed (rc=$src_rc)"; }
        fi
        c=$(sink_count)
        if [[ -z "$t_e2e" ]] && (( c >= MESSAGES )); then t_e2e=$(now); fi
        [[ -n "$t_inj" && -n "$t_e2e" ]] && break
        if (( c != last_c )); then last_c=$c; last_move=$SECONDS; fi
        (( SECONDS - last_move < STALL )) || die "[$label] sink count stuck at $c/$MESSAGES for ${STALL}s"
        (( SECONDS - start < TIMEOUT )) || die "[$label] timeout after ${TIMEOUT}s (sink has $c/$MESSAGES)"
        sleep 0.02
    done
    sleep 1   # let stragglers (duplicates) show up before the final count
    R_COUNT=$(sink_count)
    # count_sink knows when message N arrived (poll resolution would add up to 20 ms)
    if [[ $SINK == count ]] && (( R_COUNT == MESSAGES )); then t_e2e=$(sink_last_time); fi
    (( R_COUNT == MESSAGES )) || log "[$label] WARNING: sink counted $R_COUNT messages, expected $MESSAGES"
    R_INJECT_S=$(fsub "$t_inj" "$t0")
    R_E2E_S=$(fsub "$t_e2e" "$t0")
    R_INJECT_RATE=$(rate "$MESSAGES" "$R_INJECT_S")
    R_E2E_RATE=$(rate "$MESSAGES" "$R_E2E_S")
    log "[$label] inject ${R_INJECT_S}s (${R_INJECT_RATE} msg/s), end-to-end ${R_E2E_S}s (${R_E2E_RATE} msg/s), sink count $R_COUNT"
}

# ----------------------------------------------------------------- postfix ----
phase_postfix() {
    local base="$TMP/postfix" port
    free_port port
    sink_start postfix
    postfix_configure_relay "$base" "$port" "$SINK_PORT" 200
    log "[postfix] starting private instance (config $base/etc, smtpd 127.0.0.1:$port, relayhost [127.0.0.1]:$SINK_PORT)"
    postfix_start "$base" "$port" 0
    run_load postfix "$port"
    PF_CMD=$LAST_CMD
    PF_INJECT_S=$R_INJECT_S PF_E2E_S=$R_E2E_S PF_INJECT_RATE=$R_INJECT_RATE PF_E2E_RATE=$R_E2E_RATE PF_COUNT=$R_COUNT
    postfix_stop
    sink_stop
    cp "$base/maillog" "$TMP/postfix-maillog" 2>/dev/null || true
}

# ---------------------------------------------------------------- ringmail ----
phase_ringmail() {
    if [[ ! -x $RINGMAILD ]]; then
        log "ringmaild not built: skipping ($RINGMAILD)"
        RM_STATUS="not built"
        return
    fi
    local base="$TMP/ringmail" port pid
    free_port port
    sink_start ringmail
    mkdir -p "$base/var"
    {
        ringmail_toml "$base/var" "$port" "127.0.0.1:$SINK_PORT"
        echo "pool_size = 50"
    } >"$base/ringmail.toml"
    log "[ringmail] starting $RINGMAILD --config $base/ringmail.toml"
    "$RINGMAILD" --config "$base/ringmail.toml" >"$TMP/ringmaild.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if ! wait_banner "$port" 30; then
        tail -n 30 "$TMP/ringmaild.log" >&2 || true
        die "ringmaild did not answer with a 220 banner on 127.0.0.1:$port within 30s"
    fi
    run_load ringmail "$port"
    RM_CMD=$LAST_CMD
    RM_INJECT_S=$R_INJECT_S RM_E2E_S=$R_E2E_S RM_INJECT_RATE=$R_INJECT_RATE RM_E2E_RATE=$R_E2E_RATE RM_COUNT=$R_COUNT
    RM_STATUS="ok"
    stop_pid "$pid" 10 "[ringmail] ringmaild"
    sink_stop
    cp "$TMP/ringmaild.log" "$TMP/ringmaild-run.log" 2>/dev/null || true
}

# -------------------------------------------------------------------- main ----
ensure_deps
make_tmp e2e_relay 755
log "messages=$MESSAGES sessions=$SESSIONS size=$SIZE sink=$SINK only=${ONLY:-all} tmp=$TMP"
check_cpu_busy "other work on this machine will skew the numbers"

# direct: smtp-source -> smtp-sink (verifies counting; ceiling of the load generator)
[[ $SINK == count ]] && build_count_sink
sink_start direct
run_load direct "$SINK_PORT"
DIRECT_CMD=$LAST_CMD
DIRECT_INJECT_S=$R_INJECT_S DIRECT_E2E_S=$R_E2E_S DIRECT_INJECT_RATE=$R_INJECT_RATE DIRECT_E2E_RATE=$R_E2E_RATE
(( R_COUNT == MESSAGES )) || die "counting check failed: direct run counted $R_COUNT, expected $MESSAGES"
sink_stop

PF_STATUS="skipped" RM_STATUS="skipped"
# Each system starts with the disk quiet: the previous phase's dirty pages (Postfix
# writes a queue file per message) would otherwise be written back during the next
# one and slow its fsyncs.
if [[ "$ONLY" != ringmail ]]; then settle; phase_postfix; PF_STATUS="ok"; fi
if [[ "$ONLY" != postfix ]]; then settle; phase_ringmail; fi

RATIO="n/a"
if [[ $PF_STATUS == ok && $RM_STATUS == ok ]]; then
    RATIO=$(awk -v a="$PF_E2E_S" -v b="$RM_E2E_S" 'BEGIN { printf "%.2f", a / b }')
fi

# ------------------------------------------------------------------ report ----
row() { printf '%-22s %14s %14s %12s %12s\n' "$@"; }
echo
echo "End-to-end relay benchmark: $MESSAGES messages, $SESSIONS sessions, $SIZE-byte bodies, $(nproc) cores, ringmaild shards = $RM_SHARDS"
row "system" "inject msg/s" "e2e msg/s" "inject s" "e2e s"
row "direct (ceiling)" "$DIRECT_INJECT_RATE" "$DIRECT_E2E_RATE" "$DIRECT_INJECT_S" "$DIRECT_E2E_S"
if [[ $PF_STATUS == ok ]]; then row "postfix" "$PF_INJECT_RATE" "$PF_E2E_RATE" "$PF_INJECT_S" "$PF_E2E_S"
else row "postfix" "$PF_STATUS" "" "" ""; fi
if [[ $RM_STATUS == ok ]]; then row "ringmail" "$RM_INJECT_RATE" "$RM_E2E_RATE" "$RM_INJECT_S" "$RM_E2E_S"
else row "ringmail" "$RM_STATUS" "" "" ""; fi
echo "CPU busy (other work) in the second before the run: ${BUSY_BEFORE}%"
echo "ratio ringmail/postfix end to end: ${RATIO}$([[ $RATIO != n/a ]] && echo 'x')  (target >= 20x)"
echo
echo "commands:"
echo "  direct:   $DIRECT_CMD"
[[ $PF_STATUS == ok ]] && echo "  postfix:  $PF_CMD   (private instance, postfix -c <tmp>/postfix/etc start)"
[[ $RM_STATUS == ok ]] && echo "  ringmail: $RM_CMD   ($RINGMAILD --config <tmp>/ringmail/ringmail.toml)"
echo "  sink:     $SINK_CMD"

mkdir -p "$RESULTS_DIR"
STAMP=$(utc_stamp)
OUT="$RESULTS_DIR/e2e_relay-$STAMP.json"
jstr() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
phase_json() {   # status inject_s e2e_s inject_rate e2e_rate count cmd
    if [[ $1 == ok ]]; then
        printf '{"status": "ok", "inject_s": %s, "e2e_s": %s, "inject_msgs_per_s": %s, "e2e_msgs_per_s": %s, "sink_count": %s, "command": %s}' \
            "$2" "$3" "$4" "$5" "$6" "$(jstr "$7")"
    else
        printf '{"status": %s}' "$(jstr "$1")"
    fi
}
{
    printf '{\n'
    printf '  "benchmark": "e2e_relay",\n'
    printf '  "date_utc": "%s",\n' "$STAMP"
    printf '  "machine": {"nproc": %s, "ringmaild_shards": %s, "kernel": %s, "postfix_version": %s, "cpu_busy_pct_before": %s},\n' \
        "$(nproc)" "$RM_SHARDS" "$(jstr "$(uname -sr)")" "$(jstr "$(postfix_version)")" "$BUSY_BEFORE"
    printf '  "params": {"messages": %s, "sessions": %s, "size": %s, "sink": %s},\n' "$MESSAGES" "$SESSIONS" "$SIZE" "$(jstr "$SINK")"
    printf '  "direct": %s,\n' "$(phase_json ok "$DIRECT_INJECT_S" "$DIRECT_E2E_S" "$DIRECT_INJECT_RATE" "$DIRECT_E2E_RATE" "$MESSAGES" "$DIRECT_CMD")"
    printf '  "postfix": %s,\n' "$(phase_json "$PF_STATUS" "${PF_INJECT_S:-}" "${PF_E2E_S:-}" "${PF_INJECT_RATE:-}" "${PF_E2E_RATE:-}" "${PF_COUNT:-}" "${PF_CMD:-}")"
    printf '  "ringmail": %s,\n' "$(phase_json "$RM_STATUS" "${RM_INJECT_S:-}" "${RM_E2E_S:-}" "${RM_INJECT_RATE:-}" "${RM_E2E_RATE:-}" "${RM_COUNT:-}" "${RM_CMD:-}")"
    if [[ $RATIO == n/a ]]; then printf '  "ratio_e2e_ringmail_over_postfix": null\n'
    else printf '  "ratio_e2e_ringmail_over_postfix": %s\n' "$RATIO"; fi
    printf '}\n'
} >"$OUT"
echo "results: ${OUT#"$REPO_ROOT"/}"
