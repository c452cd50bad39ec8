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
# Environment: RINGMAILD, BLAST (default build/tools/...), RESULTS_DIR, KEEP_TMP=1,
# CELL_TIMEOUT (seconds, default 300).
set -euo pipefail

QUICK=0
SIZES="1024,4096,100000,1048576"
CONNS="50,500"
ONLY="direct,ringmail,postfix"
POOL100=1
CHART=1
CELL_TIMEOUT=${CELL_TIMEOUT:-300}

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
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

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"
RINGMAILD="${RINGMAILD:-$REPO_ROOT/build/tools/ringmaild}"
BLAST="${BLAST:-$REPO_ROOT/build/tools/ringmail-blast}"
RESULTS_DIR="${RESULTS_DIR:-$REPO_ROOT/bench/results}"
PY=/usr/bin/python3
TICKS=$(getconf CLK_TCK)

log() { printf '[suite %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

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

# ---------------------------------------------------------------- cleanup ----
TMP=""
PIDS=()
PF_DIR="" PF_MASTER_PID=""
SAMPLER_PID=""
cleanup() {
    local rc=$?
    set +e
    [[ -n "$SAMPLER_PID" ]] && kill "$SAMPLER_PID" 2>/dev/null
    [[ -n "$PF_DIR" ]] && postfix_stop
    local p
    # wrapper subshells first stop their child (by parent pid), then themselves
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && { pkill -TERM -P "$p" 2>/dev/null; kill -TERM "$p" 2>/dev/null; }; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        if [[ "${KEEP_TMP:-0}" == 1 || $rc -ne 0 ]]; then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- install ----
ensure_deps() {
    [[ -x $BLAST ]] || die "ringmail-blast not built ($BLAST): ninja -C build"
    if want ringmail; then [[ -x $RINGMAILD ]] || die "ringmaild not built ($RINGMAILD): ninja -C build"; fi
    local pkgs=()
    if want postfix && [[ ! -x /usr/sbin/postfix ]]; then pkgs+=(postfix); fi
    if (( CHART )) && ! $PY -c 'import matplotlib' 2>/dev/null; then pkgs+=(python3-matplotlib); fi
    (( ${#pkgs[@]} )) || return 0
    [[ $(id -u) -eq 0 ]] || die "missing ${pkgs[*]} and not root: apt-get install ${pkgs[*]}"
    local sys_pf_running=""
    [[ -r /var/spool/postfix/pid/master.pid ]] && kill -0 "$(tr -dc 0-9 </var/spool/postfix/pid/master.pid)" 2>/dev/null && sys_pf_running=1
    log "installing Debian packages: ${pkgs[*]}"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "${pkgs[@]}" >/tmp/suite-apt.log 2>&1; then
        apt-get update -q >>/tmp/suite-apt.log 2>&1 || true
        apt-get install -y -q "${pkgs[@]}" >>/tmp/suite-apt.log 2>&1 || die "apt-get install failed, see /tmp/suite-apt.log"
    fi
    if [[ -z "$sys_pf_running" && -r /var/spool/postfix/pid/master.pid ]] \
        && kill -0 "$(tr -dc 0-9 </var/spool/postfix/pid/master.pid)" 2>/dev/null; then
        log "stopping the system postfix the package started"; postfix stop >/dev/null 2>&1 || true
    fi
}

# ------------------------------------------------------------------ ports ----
port_in_use() {
    local hex; hex=$(printf '%04X' "$1")
    awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$(( 20000 + RANDOM % 12000 ))   # below the ephemeral range (32768-60999)
        [[ $USED_PORTS == *" $p "* ]] && continue
        port_in_use "$p" && continue
        USED_PORTS+="$p "; echo "$p"; return 0
    done
    die "no free port found"
}
probe_banner() {
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
    local deadline=$(( SECONDS + $2 ))
    while (( SECONDS < deadline )); do probe_banner "$1" && return 0; sleep 0.1; done
    return 1
}
wait_listen() {   # the sink answers the banner only to real sessions that count; just wait for LISTEN
    local deadline=$(( SECONDS + $2 ))
    while (( SECONDS < deadline )); do port_in_use "$1" && return 0; sleep 0.05; done
    return 1
}
STOP_RC=0
stop_pid() {   # SIGTERM, wait up to 10 s, SIGKILL; exit status in STOP_RC (128+N = killed by signal N)
    local p=$1
    STOP_RC=0
    if kill -TERM "$p" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && { log "pid $p ignored SIGTERM for 10 s: SIGKILL"; kill -KILL "$p" 2>/dev/null; }
    fi
    wait "$p" 2>/dev/null || STOP_RC=$?
}

# ------------------------------------------------------------ measurement ----

ringmaild_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ringmaild_status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }   # kB
postfix_pids() { echo "$1"; pgrep -P "$1" || true; }
postfix_ticks() {   # live postfix processes (utime+stime) + master's reaped children
    local m=$1 pids f=()
    pids=$(postfix_pids "$m")
    for p in $pids; do f+=("/proc/$p/stat"); done
    { cat "${f[@]}" 2>/dev/null || true; } | awk -v m="$m" '{ s += $14 + $15; if ($1 == m) s += $16 + $17 } END { print s + 0 }'
}
postfix_sampler() {   # $1 master pid, $2 out file: "<max sum VmRSS kB> <max sum Pss kB> <max processes>"
    local m=$1 out=$2 maxr=0 maxp=0 maxn=0 i=0 pids r p n f
    while :; do
        pids=$(postfix_pids "$m")
        f=(); n=0
        for p in $pids; do f+=("/proc/$p/status"); n=$((n + 1)); done
        r=$({ cat "${f[@]}" 2>/dev/null || true; } | awk '$1 == "VmRSS:" { s += $2 } END { print s + 0 }')
        (( r > maxr )) && maxr=$r
        (( n > maxn )) && maxn=$n
        if (( i % 2 == 0 )); then
            f=(); for p in $pids; do f+=("/proc/$p/smaps_rollup"); done
            p=$({ cat "${f[@]}" 2>/dev/null || true; } | awk '$1 == "Pss:" { s += $2 } END { print s + 0 }')
            (( p > maxp )) && maxp=$p
        fi
        echo "$maxr $maxp $maxn" >"$out.tmp" && mv "$out.tmp" "$out"
        i=$((i + 1))
        sleep 0.2
    done
}

# run_cell SYSTEM LABEL SIZE CONNS N PORT SINK_PID SINK_JSON -> writes $TMP/cell-LABEL.json
# the server's pid is SERVER_PID (ringmaild) or PF_MASTER_PID (postfix); none for direct
run_cell() {
    local sys=$1 label=$2 size=$3 conns=$4 n=$5 port=$6 sink_pid=$7 sink_json=$8
    local blast_json="$TMP/blast-$label.json" t0 t_inj="" t_e2e="" c0=0 c1=0 blast_pid
    local -a cmd=("$BLAST" send --to "127.0.0.1:$port" --connections "$conns" --messages "$n"
                  --size "$size" --timeout 120 --json -q)
    log "[$label] ${cmd[*]}"
    case $sys in
        ringmail) c0=$(ringmaild_ticks "$SERVER_PID") ;;
        postfix)  c0=$(postfix_ticks "$PF_MASTER_PID")
                  postfix_sampler "$PF_MASTER_PID" "$TMP/pfmem-$label" & SAMPLER_PID=$! ;;
    esac
    t0=$EPOCHREALTIME
    # each wrapper subshell stamps the moment its child exited (no polling)
    ( timeout $(( CELL_TIMEOUT + 30 )) "${cmd[@]}" >"$blast_json" 2>"$TMP/blast-$label.err"
      rc=$?; echo "$EPOCHREALTIME" >"$TMP/blast-$label.end"; exit $rc ) &
    blast_pid=$!
    PIDS+=("$blast_pid")
    local blast_rc=0 sink_rc=0
    wait "$blast_pid" || blast_rc=$?
    wait "$sink_pid" || sink_rc=$?
    t_inj=$(cat "$TMP/blast-$label.end")
    t_e2e=$(sink_done_at "$sink_json" "$TMP/sink-$label.end")
    local rss_kb=null hwm_kb=null pss_kb=null nproc=null cpu_ticks=null
    case $sys in
        ringmail) c1=$(ringmaild_ticks "$SERVER_PID"); cpu_ticks=$((c1 - c0))
                  rss_kb=$(ringmaild_status "$SERVER_PID" VmRSS); hwm_kb=$(ringmaild_status "$SERVER_PID" VmHWM) ;;
        postfix)  c1=$(postfix_ticks "$PF_MASTER_PID"); cpu_ticks=$((c1 - c0))
                  kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
                  read -r hwm_kb pss_kb nproc <"$TMP/pfmem-$label" || true ;;
    esac
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
        printf '"t0": %s, "inject_s": %s, "e2e_s": %s, ' "$t0" "$(awk -v a="$t_inj" -v b="$t0" 'BEGIN{printf "%.4f", a-b}')" \
            "$(awk -v a="$t_e2e" -v b="$t0" 'BEGIN{printf "%.4f", a-b}')"
        printf '"blast_rc": %s, "sink_rc": %s, ' "$blast_rc" "$sink_rc"
        printf '"server_peak_rss_kb": %s, "server_rss_end_kb": %s, "server_peak_pss_kb": %s, "server_max_processes": %s, ' \
            "${hwm_kb:-null}" "${rss_kb:-null}" "${pss_kb:-null}" "${nproc:-null}"
        printf '"server_cpu_s": %s, ' "$( [[ $cpu_ticks == null ]] && echo null || awk -v t="$cpu_ticks" -v h="$TICKS" 'BEGIN{printf "%.2f", t/h}')"
        printf '"blast": %s, "sink": %s}\n' "$(cat "$blast_json")" "$(cat "$sink_json")"
    } >"$TMP/cell-$label.json"
    log "[$label] inject $(awk -v a="$t_inj" -v b="$t0" 'BEGIN{printf "%.3f", a-b}') s, e2e $(awk -v a="$t_e2e" -v b="$t0" 'BEGIN{printf "%.3f", a-b}') s"
}

SINK_PORT="" SINK_PID="" SINK_JSON=""
sink_start() {   # $1 label, $2 expected messages
    SINK_PORT=$(free_port)
    SINK_JSON="$TMP/sink-$1.json"
    ( "$BLAST" sink --listen "127.0.0.1:$SINK_PORT" --expect "$2" --duration "$CELL_TIMEOUT" --json -q \
        >"$SINK_JSON" 2>"$TMP/sink-$1.err"
      rc=$?; echo "$EPOCHREALTIME" >"$TMP/sink-$1.end"; exit $rc ) &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_listen "$SINK_PORT" 10 || die "sink did not listen on $SINK_PORT"
}

# ------------------------------------------------------------------ cells ----
cell_direct() {   # size conns n
    local label="direct-$1-$2"
    sink_start "$label" "$3"
    POOL="" run_cell direct "$label" "$1" "$2" "$3" "$SINK_PORT" "$SINK_PID" "$SINK_JSON"
}

SERVER_PID=""
cell_ringmail() {   # size conns n pool
    local size=$1 conns=$2 n=$3 pool=$4
    local label="ringmail-p$pool-$size-$conns" base="$TMP/rm-p$pool-$size-$conns" port
    sink_start "$label" "$n"
    port=$(free_port)
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
pool_size = $pool
[smtp]
max_connections = 20000
max_connections_per_ip = 0
EOF
    "$RINGMAILD" --config "$base/ringmail.toml" >"$base/ringmaild.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_banner "$port" 30 || { tail -n 20 "$base/ringmaild.log" >&2; die "ringmaild did not answer on $port"; }
    POOL=$pool run_cell ringmail "$label" "$size" "$conns" "$n" "$port" "$SINK_PID" "$SINK_JSON"
    local alive=1
    kill -0 "$SERVER_PID" 2>/dev/null || alive=0
    stop_pid "$SERVER_PID" 2>/dev/null
    if (( STOP_RC != 0 )); then
        log "[$label] ringmaild exit status $STOP_RC $( ((alive)) && echo 'after SIGTERM' || echo 'BEFORE SIGTERM') (128+N = signal N)"
        cp "$base/ringmaild.log" "$TMP/ringmaild-$label.log"
    fi
    echo "$STOP_RC $alive" >"$TMP/cell-$label.exit"
    local w
    w=$(grep -c -E ': (warning|error|fatal)' "$base/ringmaild.log" || true)
    if (( w > 0 )); then
        log "[$label] ringmaild logged $w warning/error lines, e.g.:"
        grep -E ': (warning|error|fatal)' "$base/ringmaild.log" | head -n 3 >&2
        cp "$base/ringmaild.log" "$TMP/ringmaild-$label.log"
    fi
    echo "$w" >"$TMP/cell-$label.warnings"
    rm -rf "$base/var"
}

postfix_stop() {
    local dir=$PF_DIR
    PF_DIR=""
    postfix -c "$dir" stop >/dev/null 2>&1 || true
    if [[ -n "$PF_MASTER_PID" ]]; then
        for _ in $(seq 100); do kill -0 "$PF_MASTER_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$PF_MASTER_PID" 2>/dev/null; then
            kill -KILL "$PF_MASTER_PID" $(pgrep -P "$PF_MASTER_PID" || true) 2>/dev/null || true
        fi
    fi
    PF_MASTER_PID=""
}
cell_postfix() {   # size conns n
    local size=$1 conns=$2 n=$3
    local label="postfix-$size-$conns" base="$TMP/pf-$size-$conns" port
    sink_start "$label" "$n"
    port=$(free_port)
    mkdir -p "$base/etc" "$base/queue" "$base/data"
    chmod 755 "$base"; chown postfix "$base/data"
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
        "default_process_limit = 600"
        "smtp_destination_concurrency_limit = 50"
        "default_destination_concurrency_limit = 50"
        "smtpd_client_connection_count_limit = 0"
        "smtpd_client_connection_rate_limit = 0"
        "smtpd_tls_security_level = none"
        "smtp_tls_security_level = none"
        "message_size_limit = 20480000"
        "biff = no"
        "maillog_file_prefixes = $base"
        "maillog_file = $base/maillog"
    )
    local s
    for s in "${settings[@]}"; do postconf -c "$base/etc" -e "$s"; done
    postconf -c "$base/etc" -M# smtp/inet
    printf '127.0.0.1:%s inet n - n - - smtpd\n' "$port" >>"$base/etc/master.cf"
    postconf -c "$base/etc" -F '*/*/chroot = n'
    postconf -c "$base/etc" -n >"$TMP/postfix-main.cf.txt"
    PF_DIR="$base/etc"
    postfix -c "$base/etc" check >"$base/check.log" 2>&1 || { cat "$base/check.log" >&2; die "postfix check failed"; }
    postfix -c "$base/etc" start >"$base/start.log" 2>&1 || { cat "$base/start.log" >&2; die "postfix start failed"; }
    local pidf="$base/queue/pid/master.pid"
    for _ in $(seq 100); do [[ -s $pidf ]] && break; sleep 0.1; done
    PF_MASTER_PID=$(tr -dc 0-9 <"$pidf" 2>/dev/null || true)
    [[ -n "$PF_MASTER_PID" ]] || die "postfix master pid not found"
    wait_banner "$port" 30 || die "postfix smtpd did not answer on 127.0.0.1:$port"
    POOL=50 run_cell postfix "$label" "$size" "$conns" "$n" "$port" "$SINK_PID" "$SINK_JSON"
    postfix_stop
    grep -E 'warning|error|fatal|panic' "$base/maillog" | grep -v 'using all 4001 of the active queue' \
        | head -n 3 >"$TMP/cell-$label.pfwarn" || true
    rm -rf "$base"
}

cpu_busy_pct() {
    local a b
    a=$(head -n 1 /proc/stat); sleep 1; b=$(head -n 1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x); split(b, y); t = 0
        for (k = 2; k <= 9; k++) t += y[k] - x[k]
        i = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", (t > 0 ? 100 * (t - i) / t : 0) }'
}

# -------------------------------------------------------------------- main ----
ensure_deps
TMP=$(mktemp -d /tmp/suite.XXXXXX)
chmod 755 "$TMP"
# private copies: a rebuild of build/ during the run must not change the binaries under test
# (renamed, so that a "pkill ringmail-blast" elsewhere on a shared machine does not hit them)
cp "$BLAST" "$TMP/suite-blast"; BLAST="$TMP/suite-blast"
if want ringmail; then cp "$RINGMAILD" "$TMP/suite-ringmaild"; RINGMAILD="$TMP/suite-ringmaild"; fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
BUSY_BEFORE=$(cpu_busy_pct)
(( BUSY_BEFORE > 10 )) && log "WARNING: the CPUs were ${BUSY_BEFORE}% busy before the run: numbers will be skewed"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
log "quick=$QUICK sizes=$SIZES conns=$CONNS only=$ONLY nofile=$(ulimit -n) tmp=$TMP"
T_START=$SECONDS
IFS=, read -r -a SIZE_LIST <<<"$SIZES"
IFS=, read -r -a CONN_LIST <<<"$CONNS"
for conns in "${CONN_LIST[@]}"; do
    for size in "${SIZE_LIST[@]}"; do
        n=$(messages_for "$size")
        want direct && cell_direct "$size" "$conns" "$n"
        if want ringmail; then
            cell_ringmail "$size" "$conns" "$n" 50
            (( POOL100 && conns >= 500 )) && cell_ringmail "$size" "$conns" "$n" 100
        fi
        want postfix && cell_postfix "$size" "$conns" "$n"
    done
done
log "all cells done in $(( SECONDS - T_START )) s"

mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/suite-$STAMP.json"
QUICK=$QUICK BUSY=$BUSY_BEFORE STAMP=$STAMP TMPD=$TMP OUT=$OUT \
PFVER="$(postconf -dh mail_version 2>/dev/null || echo unknown)" \
COMMIT="$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)" \
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
    "machine": {"nproc": os.cpu_count(), "kernel": platform.release(), "postfix_version": os.environ["PFVER"],
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
print("| conns | size | ringmail/Postfix | ringmail/ceiling | pool 100 / pool 50 |")
print("|---:|---:|---:|---:|---:|")
for r in summary:
    print("| %d | %s | %s | %s | %s |" % (r["connections"], sz(r["size"]), fmt(r["ringmail_over_postfix"], "{:.1f}x"),
          fmt(r["ringmail_over_ceiling"], "{:.2f}"), fmt(r.get("pool100_over_pool50"), "{:.2f}")))
PYEOF
echo "CPU busy (other work) in the second before the run: ${BUSY_BEFORE}%"
echo "results: ${OUT#"$REPO_ROOT"/}"
if (( CHART )); then
    $PY "$REPO_ROOT/bench/suite_chart.py" "$OUT" "${OUT%.json}.png" && echo "chart:   ${OUT#"$REPO_ROOT"/}" | sed 's/\.json$/.png/'
fi
