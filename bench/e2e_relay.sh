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
# Environment overrides: RINGMAILD (default build/tools/ringmaild),
# RESULTS_DIR (default bench/results), KEEP_TMP=1 to keep the temp dir.
set -euo pipefail

MESSAGES=20000
SESSIONS=50
SIZE=4096
ONLY=""
SINK=count           # count (bench/count_sink.c, compiled here) | smtp-sink (Postfix's)
TIMEOUT=900          # hard deadline for one phase (seconds)
STALL=60             # fail a phase if the sink count does not move for this long

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
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
for v in MESSAGES SESSIONS SIZE TIMEOUT; do
    [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || { echo "$v must be a positive integer" >&2; exit 2; }
done

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RINGMAILD="${RINGMAILD:-$REPO_ROOT/build/tools/ringmaild}"
RESULTS_DIR="${RESULTS_DIR:-$REPO_ROOT/bench/results}"
SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink
SENDER="bench-sender@source.example.test"
RCPT="bench-rcpt@dest.example.test"

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { echo "$EPOCHREALTIME"; }                       # bash >= 5
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "0" }'; }

# ---------------------------------------------------------------- cleanup ----
TMP=""
PIDS=()               # every process we started (killed by pid on exit)
PF_DIR=""             # private postfix config dir, if started
SYSTEM_PF_WAS_RUNNING=""

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$PF_DIR" ]]; then postfix_stop; fi
    local p
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        if [[ "${KEEP_TMP:-0}" == 1 || $rc -ne 0 ]]; then
            log "temp dir kept: $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- install ----
system_postfix_running() {
    # the default instance's master writes its pid here
    local pidf=/var/spool/postfix/pid/master.pid p
    [[ -r $pidf ]] || return 1
    p=$(tr -dc 0-9 < "$pidf")
    [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null
}

ensure_deps() {
    if [[ -x $SMTP_SOURCE && -x $SMTP_SINK && -x /usr/sbin/postfix ]]; then return; fi
    [[ $(id -u) -eq 0 ]] || die "postfix (smtp-source/smtp-sink) is missing and we are not root: apt-get install postfix"
    command -v apt-get >/dev/null || die "postfix is missing and this is not a Debian-like system"
    system_postfix_running && SYSTEM_PF_WAS_RUNNING=1
    log "installing Debian package postfix (main_mailer_type = No configuration)"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q postfix >"/tmp/e2e_relay-apt.log" 2>&1; then
        apt-get update -q >>"/tmp/e2e_relay-apt.log" 2>&1 || true
        apt-get install -y -q postfix >>"/tmp/e2e_relay-apt.log" 2>&1 \
            || die "apt-get install postfix failed, see /tmp/e2e_relay-apt.log"
    fi
    # The package may have started the system instance: don't leave it running.
    if [[ -z "$SYSTEM_PF_WAS_RUNNING" ]] && system_postfix_running; then
        log "stopping the system postfix the package started"
        postfix stop >/dev/null 2>&1 || true
    fi
    [[ -x $SMTP_SOURCE && -x $SMTP_SINK ]] || die "smtp-source/smtp-sink not found after install"
}

# ------------------------------------------------------------------ ports ----
port_in_use() {   # LISTEN (state 0A) on any address, v4 or v6
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$(( 20000 + RANDOM % 30000 ))
        [[ $USED_PORTS == *" $p "* ]] && continue
        port_in_use "$p" && continue
        USED_PORTS+="$p "
        echo "$p"; return 0
    done
    die "no free port found"
}

# wait until 127.0.0.1:$1 answers with a "220 " greeting (deadline $2 s)
probe_banner() {   # one attempt, in a subshell (a failed exec redirection would end the script)
    (
        exec 9<>"/dev/tcp/127.0.0.1/$1" || exit 1
        while IFS= read -r -t 2 line <&9; do
            if [[ $line == "220 "* ]]; then printf 'QUIT\r\n' >&9; exit 0; fi
            [[ $line == "220-"* ]] || exit 1
        done
        exit 1
    ) 2>/dev/null
}
wait_banner() {
    local port=$1 deadline=$(( SECONDS + $2 ))
    while (( SECONDS < deadline )); do
        probe_banner "$port" && return 0
        sleep 0.1
    done
    return 1
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
    SINK_PORT=$(free_port)
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
PF_MASTER_PID=""
postfix_stop() {
    local dir=$PF_DIR
    PF_DIR=""
    postfix -c "$dir" stop >/dev/null 2>&1 || true
    if [[ -n "$PF_MASTER_PID" ]]; then
        local kids
        for _ in $(seq 100); do kill -0 "$PF_MASTER_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$PF_MASTER_PID" 2>/dev/null; then
            kids=$(pgrep -P "$PF_MASTER_PID" || true)
            kill -KILL "$PF_MASTER_PID" $kids 2>/dev/null || true
        fi
    fi
}


phase_postfix() {
    local base="$TMP/postfix" port
    port=$(free_port)
    sink_start postfix
    mkdir -p "$base/etc" "$base/queue" "$base/data"
    chmod 755 "$TMP" "$base"
    chown postfix "$base/data"
    local master_src=/usr/share/postfix/master.cf.dist
    [[ -r $master_src ]] || master_src=/etc/postfix/master.cf
    cp "$master_src" "$base/etc/master.cf"
    : >"$base/etc/main.cf"
    local -a settings=(
        "compatibility_level = 3.6"
        "queue_directory = $base/queue"
        "data_directory = $base/data"
        "mail_owner = postfix"
        "setgid_group = postdrop"
        "myhostname = postfix-bench.example.test"
        "mydomain = example.test"
        "mydestination ="
        "local_recipient_maps ="
        "local_transport = error:local delivery is disabled"
        "relay_domains ="
        "relayhost = [127.0.0.1]:$SINK_PORT"
        "mynetworks = 127.0.0.0/8"
        "inet_interfaces = loopback-only"
        "inet_protocols = ipv4"
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination"
        "in_flow_delay = 0"
        "default_process_limit = 200"
        "smtp_destination_concurrency_limit = 50"
        "default_destination_concurrency_limit = 50"
        "smtpd_client_connection_count_limit = 0"
        "smtpd_client_connection_rate_limit = 0"
        "smtpd_tls_security_level = none"
        "smtp_tls_security_level = none"
        "biff = no"
        "maillog_file_prefixes = $base"
        "maillog_file = $base/maillog"
    )
    local s
    for s in "${settings[@]}"; do postconf -c "$base/etc" -e "$s"; done
    # the smtpd listener: 127.0.0.1:PORT instead of :25, and no chroot anywhere
    postconf -c "$base/etc" -M# smtp/inet
    printf '127.0.0.1:%s inet n - n - - smtpd\n' "$port" >>"$base/etc/master.cf"
    postconf -c "$base/etc" -F '*/*/chroot = n'
    postconf -c "$base/etc" -n >"$TMP/postfix-main.cf.txt"
    PF_DIR="$base/etc"
    log "[postfix] starting private instance (config $base/etc, smtpd 127.0.0.1:$port, relayhost [127.0.0.1]:$SINK_PORT)"
    postfix -c "$base/etc" check >"$TMP/postfix-check.log" 2>&1 || { cat "$TMP/postfix-check.log" >&2; die "postfix check failed"; }
    postfix -c "$base/etc" start >"$TMP/postfix-start.log" 2>&1 || { cat "$TMP/postfix-start.log" >&2; die "postfix start failed"; }
    local pidf="$base/queue/pid/master.pid"
    for _ in $(seq 100); do [[ -s $pidf ]] && break; sleep 0.1; done
    PF_MASTER_PID=$(tr -dc 0-9 <"$pidf" 2>/dev/null || true)
    wait_banner "$port" 30 || die "postfix smtpd did not answer on 127.0.0.1:$port"
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
    port=$(free_port)
    sink_start ringmail
    mkdir -p "$base/var"
    cat >"$base/ringmail.toml" <<EOF
[server]
hostname = "bench.example.test"
data_dir = "$base/var"
shards = 0
[[listener]]
protocol = "smtp"
address = "127.0.0.1:$port"
[relay]
smarthost = "127.0.0.1:$SINK_PORT"
allow_networks = ["127.0.0.0/8"]
pool_size = 50
EOF
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
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { log "[ringmail] ringmaild ignored SIGTERM for 10s: SIGKILL"; kill -KILL "$pid"; }
    wait "$pid" 2>/dev/null || true
    sink_stop
    cp "$TMP/ringmaild.log" "$TMP/ringmaild-run.log" 2>/dev/null || true
}

# -------------------------------------------------------------------- main ----
ensure_deps
TMP=$(mktemp -d /tmp/e2e_relay.XXXXXX)
chmod 755 "$TMP"
log "messages=$MESSAGES sessions=$SESSIONS size=$SIZE sink=$SINK only=${ONLY:-all} tmp=$TMP"
cpu_busy_pct() {   # % of all CPUs busy over 1 s (from /proc/stat)
    local a b
    a=$(head -n 1 /proc/stat); sleep 1; b=$(head -n 1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x); split(b, y); t = 0; i = 0
        for (k = 2; k <= 9; k++) t += y[k] - x[k]
        i = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", (t > 0 ? 100 * (t - i) / t : 0) }'
}
BUSY_BEFORE=$(cpu_busy_pct)
if (( BUSY_BEFORE > 10 )); then
    log "WARNING: the CPUs were ${BUSY_BEFORE}% busy before the run: other work on this machine will skew the numbers"
fi

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
settle() { sync; sleep 2; }
if [[ "$ONLY" != ringmail ]]; then settle; phase_postfix; PF_STATUS="ok"; fi
if [[ "$ONLY" != postfix ]]; then settle; phase_ringmail; fi

RATIO="n/a"
if [[ $PF_STATUS == ok && $RM_STATUS == ok ]]; then
    RATIO=$(awk -v a="$PF_E2E_S" -v b="$RM_E2E_S" 'BEGIN { printf "%.2f", a / b }')
fi

# ------------------------------------------------------------------ report ----
row() { printf '%-22s %14s %14s %12s %12s\n' "$@"; }
echo
echo "End-to-end relay benchmark: $MESSAGES messages, $SESSIONS sessions, $SIZE-byte bodies, $(nproc) cores"
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
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
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
    printf '  "machine": {"nproc": %s, "kernel": %s, "postfix_version": %s, "cpu_busy_pct_before": %s},\n' \
        "$(nproc)" "$(jstr "$(uname -sr)")" "$(jstr "$(postconf -dh mail_version 2>/dev/null || echo unknown)")" "$BUSY_BEFORE"
    printf '  "params": {"messages": %s, "sessions": %s, "size": %s, "sink": %s},\n' "$MESSAGES" "$SESSIONS" "$SIZE" "$(jstr "$SINK")"
    printf '  "direct": %s,\n' "$(phase_json ok "$DIRECT_INJECT_S" "$DIRECT_E2E_S" "$DIRECT_INJECT_RATE" "$DIRECT_E2E_RATE" "$MESSAGES" "$DIRECT_CMD")"
    printf '  "postfix": %s,\n' "$(phase_json "$PF_STATUS" "${PF_INJECT_S:-}" "${PF_E2E_S:-}" "${PF_INJECT_RATE:-}" "${PF_E2E_RATE:-}" "${PF_COUNT:-}" "${PF_CMD:-}")"
    printf '  "ringmail": %s,\n' "$(phase_json "$RM_STATUS" "${RM_INJECT_S:-}" "${RM_E2E_S:-}" "${RM_INJECT_RATE:-}" "${RM_E2E_RATE:-}" "${RM_COUNT:-}" "${RM_CMD:-}")"
    if [[ $RATIO == n/a ]]; then printf '  "ratio_e2e_ringmail_over_postfix": null\n'
    else printf '  "ratio_e2e_ringmail_over_postfix": %s\n' "$RATIO"; fi
    printf '}\n'
} >"$OUT"
echo "results: ${OUT#"$REPO_ROOT"/}"
