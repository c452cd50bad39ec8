# shellcheck shell=bash disable=SC2034  # (variables set here are read by the scripts)
# Helpers shared by the bench scripts (sourced, not run).
#
# A script sets REPO_ROOT (from BASH_SOURCE) and BENCH_NAME (the tag of its log
# lines), then sources this file. Every function here is safe under
# `set -euo pipefail`; the scripts change the defaults below (CLEANUP_WAIT,
# FREE_PORT_SPAN, ...) after sourcing where they differ.

: "${REPO_ROOT:?set REPO_ROOT before sourcing bench/lib.sh}"

# ------------------------------------------------------------- settings ----
# the binaries under test and where results go (environment overrides)
RINGMAILD="${RINGMAILD:-$REPO_ROOT/build/tools/ringmaild}"
BLAST="${BLAST:-$REPO_ROOT/build/tools/ringmail-blast}"
RESULTS_DIR="${RESULTS_DIR:-$REPO_ROOT/bench/results}"
PY=/usr/bin/python3                # Debian's python3 (stdlib, dnslib, matplotlib)
TICKS=$(getconf CLK_TCK)           # clock ticks per second of /proc/PID/stat
RM_WARN_RE=': (warning|error|fatal)'   # ringmaild log lines that count as warnings
# ringmaild's shards: the load generator and the sink share this machine, so
# ringmaild leaves them one core (on 2 cores: one shard; measured, see
# docs/performance.md "One core for the load generator")
RM_SHARDS="${RM_SHARDS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))}"

# ------------------------------------------------------ logging, options ----
# log MSG...: "[BENCH_NAME HH:MM:SS] MSG" on stderr
log() { printf '[%s %s] %s\n' "${BENCH_NAME:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }

# die MSG...: log "ERROR: MSG" and exit 1 (the EXIT trap cleans up)
die() { log "ERROR: $*"; exit 1; }

# header_usage LAST_LINE [RC]: print the script's header comment (lines 2 to
# LAST_LINE, without the "# ") as its usage, and exit RC (default 0)
header_usage() { sed -n "2,${1}p" "$0" | sed 's/^# \{0,1\}//'; exit "${2:-0}"; }

# require_positive_ints VAR...: exit 2 unless every named variable holds a
# positive integer
require_positive_ints() {
    local v
    for v in "$@"; do
        [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || { echo "$v must be a positive integer" >&2; exit 2; }
    done
}

# --------------------------------------------------------------- numbers ----
# fsub A B [DECIMALS]: A - B of two decimal numbers (e.g. $EPOCHREALTIME stamps)
# with DECIMALS places (default 3)
fsub() { awk -v a="$1" -v b="$2" "BEGIN { printf \"%.${3:-3}f\", a - b }"; }

# rate N SECONDS: N / SECONDS as a whole number, 0 when SECONDS is not positive
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "0" }'; }

# secs TICKS: clock ticks (of /proc/PID/stat) as seconds, 2 places
secs() { awk -v t="$1" -v h="$TICKS" 'BEGIN { printf "%.2f", t / h }'; }

# ---------------------------------------------------------------- /proc ----
# proc_ticks PID: CPU time of PID so far (utime + stime), in clock ticks
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# proc_status PID FIELD: the value of FIELD (VmRSS, VmHWM, RssAnon, ...; kB) in
# /proc/PID/status
proc_status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# cpu_busy_pct: % of all CPUs busy (not idle or iowait) over 1 s, from /proc/stat
cpu_busy_pct() {
    local a b
    a=$(head -n 1 /proc/stat); sleep 1; b=$(head -n 1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x); split(b, y); t = 0
        for (k = 2; k <= 9; k++) t += y[k] - x[k]
        i = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", (t > 0 ? 100 * (t - i) / t : 0) }'
}

# check_cpu_busy [CONSEQUENCE]: BUSY_BEFORE = cpu_busy_pct; above 10 % log a
# warning that ends in CONSEQUENCE (default "numbers will be skewed")
BUSY_BEFORE=0
# shellcheck disable=SC2120  # the argument is optional
check_cpu_busy() {
    BUSY_BEFORE=$(cpu_busy_pct)
    if (( BUSY_BEFORE > 10 )); then
        log "WARNING: the CPUs were ${BUSY_BEFORE}% busy before the run: ${1:-numbers will be skewed}"
    fi
}

# ------------------------------------------------------------- processes ----
# What the EXIT trap cleans up: every background process started goes into
# PIDS; TMP is the run's temp dir; PF_DIR/PF_MASTER_PID a private Postfix
# (postfix_start); SAMPLER_PID its memory sampler.
TMP=""
PIDS=()
PF_DIR="" PF_MASTER_PID="" SAMPLER_PID=""
CLEANUP_WAIT=5        # seconds the trap waits for each pid after SIGTERM, then SIGKILL
CLEANUP_CHILDREN=1    # 1: SIGTERM a pid's children first (the stamped wrappers' commands)
KEPT_NOTE=""          # added to "temp dir kept" (e.g. " (without the queues)")

# cleanup_hook: a script's own step in the EXIT trap, before the temp dir is
# removed or kept (this one does nothing; a script redefines it)
cleanup_hook() { :; }

# stop_started: SIGTERM every pid in PIDS that still runs (its children first
# when CLEANUP_CHILDREN=1), wait up to CLEANUP_WAIT s for each, SIGKILL the rest
stop_started() {
    local p
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || continue
        if (( CLEANUP_CHILDREN )); then pkill -TERM -P "$p" 2>/dev/null || true; fi
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq $(( CLEANUP_WAIT * 10 ))); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
    done
}

# forget_pid PID: take PID out of PIDS (waited for: the trap must not signal it)
forget_pid() {
    local p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# bench_cleanup: the EXIT trap. Stops the Postfix sampler, a private Postfix
# still running and every started pid, runs cleanup_hook, then removes TMP, or
# keeps it (and says so) with KEEP_TMP=1 or when the script failed; exits with
# the script's status
bench_cleanup() {
    local rc=$?
    set +e
    [[ -n "$SAMPLER_PID" ]] && kill "$SAMPLER_PID" 2>/dev/null
    [[ -n "$PF_DIR" ]] && postfix_stop
    stop_started
    cleanup_hook
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        if [[ "${KEEP_TMP:-0}" == 1 || $rc -ne 0 ]]; then log "temp dir kept${KEPT_NOTE}: $TMP"; else rm -rf "$TMP"; fi
    fi
    exit $rc
}

# set_cleanup_traps: bench_cleanup on exit; SIGINT and SIGTERM exit with 130
set_cleanup_traps() {
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# stop_pid PID [SECONDS] [WHO]: SIGTERM, wait up to SECONDS (10), then SIGKILL
# (logged as "WHO ignored SIGTERM ...", WHO default "pid PID"); PID's exit
# status in STOP_RC (128+N = killed by signal N)
STOP_RC=0
stop_pid() {
    local p=$1 wait_s=${2:-10} who=${3:-"pid $1"}
    STOP_RC=0
    if kill -TERM "$p" 2>/dev/null; then
        for _ in $(seq $(( wait_s * 10 ))); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && { log "$who ignored SIGTERM for $wait_s s: SIGKILL"; kill -KILL "$p" 2>/dev/null; }
    fi
    wait "$p" 2>/dev/null || STOP_RC=$?
}

# run_stamped END OUT ERR CMD...: run CMD >OUT 2>ERR, then write the time it
# exited ($EPOCHREALTIME) into END; returns CMD's status. Started with `&` as
# the wrapper of a process whose end is timed (no polling). Under `set -e` a
# failing CMD ends the wrapper before the stamp, as the inline wrappers did.
run_stamped() {
    local end=$1 out=$2 err=$3 rc
    shift 3
    "$@" >"$out" 2>"$err"
    rc=$?
    echo "$EPOCHREALTIME" >"$end"
    return $rc
}

# make_tmp NAME [MODE]: TMP = a new temp dir /tmp/NAME.XXXXXX (chmod MODE when
# given: 755 where Postfix's own users must reach into it)
make_tmp() {
    TMP=$(mktemp -d "/tmp/$1.XXXXXX")
    if [[ -n "${2:-}" ]]; then chmod "$2" "$TMP"; fi
}

# raise_nofile: open-files limit 65536, or the hard limit where that is lower
raise_nofile() { ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; }

# private_copy VAR NAME: copy the binary that $VAR names to $TMP/NAME and point
# VAR there (a rebuild of build/ during the run must not change the binaries
# under test; the new name keeps a "pkill ringmail-blast" elsewhere off them)
private_copy() {
    cp "${!1}" "$TMP/$2"
    printf -v "$1" '%s' "$TMP/$2"
}

# settle: let the disk go quiet before a phase (the previous one's dirty pages
# would be written back during it)
settle() { sync; sleep 2; }

# ------------------------------------------------------------------ ports ----
# port_sockets PORT [STATE]: true when a TCP socket (v4 or v6, any address) has
# PORT as its local port, in STATE (/proc/net/tcp hex, 0A = LISTEN) if given
port_sockets() {
    local hex; hex=$(printf '%04X' "$1")
    awk -v p=":$hex" -v st="${2:-}" 'NR > 1 && substr($2, length($2) - 4) == p && (st == "" || $4 == st) { f = 1 }
        END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
# port_in_use PORT: any socket uses PORT (listening, connected, closing)
port_in_use() { port_sockets "$1"; }
# port_listening PORT: something LISTENs on PORT
port_listening() { port_sockets "$1" 0A; }

# free_port VAR: sets VAR to a random port from 20000 up (FREE_PORT_SPAN ports,
# below the kernel's ephemeral range 32768-60999, so no outgoing connection holds
# it) that no socket uses and that this script has not handed out before. It
# assigns rather than prints: inside $(...) the record of handed-out ports would
# be lost, and two ports taken before either is bound could be the same.
USED_PORTS=" "
FREE_PORT_SPAN=12000
free_port() {
    local p
    for _ in $(seq 200); do
        p=$(( 20000 + RANDOM % FREE_PORT_SPAN ))
        [[ $USED_PORTS == *" $p "* ]] && continue
        port_in_use "$p" && continue
        USED_PORTS+="$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
    die "no free port found"
}

# probe_banner PORT: one try to read a "220 " greeting from 127.0.0.1:PORT (and
# QUIT), in a subshell: a failed exec redirection would end the script
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

# wait_banner PORT SECONDS: wait until 127.0.0.1:PORT answers with a "220 "
# greeting; false after SECONDS
wait_banner() {
    local deadline=$(( SECONDS + $2 ))
    while (( SECONDS < deadline )); do probe_banner "$1" && return 0; sleep 0.1; done
    return 1
}

# wait_listen PORT SECONDS: wait until something LISTENs on PORT (the blast
# sink answers only sessions that count); false after SECONDS
wait_listen() {
    local deadline=$(( SECONDS + $2 ))
    while (( SECONDS < deadline )); do port_listening "$1" && return 0; sleep 0.05; done
    return 1
}

# ------------------------------------------------------------- packages ----
# system_postfix_running: true when the default Postfix instance's master runs
system_postfix_running() {
    local pidf=/var/spool/postfix/pid/master.pid p
    [[ -r $pidf ]] || return 1
    p=$(tr -dc 0-9 <"$pidf")
    [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null
}

# apt_install LOGFILE PKG...: apt-get install PKG... non-interactively (Postfix
# with main_mailer_type "No configuration"), once more after an apt-get update
# if that failed, output to LOGFILE; stops a system Postfix that the install
# started. False when the install failed (the caller checks root and logs).
apt_install() {
    local apt_log=$1 sys_pf_running=""
    shift
    if system_postfix_running; then sys_pf_running=1; fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections || return 1
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "$@" >"$apt_log" 2>&1; then
        apt-get update -q >>"$apt_log" 2>&1 || true
        apt-get install -y -q "$@" >>"$apt_log" 2>&1 || return 1
    fi
    if [[ -z "$sys_pf_running" ]] && system_postfix_running; then
        log "stopping the system postfix the package started"
        postfix stop >/dev/null 2>&1 || true
    fi
}

# need_dnslib: die unless Debian's python3-dnslib is there (bench/dns_zone.py)
need_dnslib() { $PY -c 'import dnslib' 2>/dev/null || die "python3-dnslib is missing: apt-get install python3-dnslib"; }

# ------------------------------------------------------- private Postfix ----
# postfix_configure BASE PORT SETTING...: a private Postfix instance under BASE
# (etc/, queue/, data/): the package's master.cf with smtpd on 127.0.0.1:PORT
# instead of :25 and no chroot; a main.cf with what every bench shares (own
# queue, no local delivery, relaying for 127.0.0.0/8 only, no TLS, no client
# limits, log to BASE/maillog) and then SETTING... ("name = value").
# `postconf -n` goes to $TMP/postfix-main.cf.txt.
postfix_configure() {
    local base=$1 port=$2 s
    shift 2
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
        "mynetworks = 127.0.0.0/8"
        "inet_protocols = ipv4"
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination"
        "in_flow_delay = 0"
        "smtpd_client_connection_count_limit = 0"
        "smtpd_client_connection_rate_limit = 0"
        "smtpd_tls_security_level = none"
        "smtp_tls_security_level = none"
        "biff = no"
        "maillog_file_prefixes = $base"
        "maillog_file = $base/maillog"
        "$@"
    )
    for s in "${settings[@]}"; do postconf -c "$base/etc" -e "$s"; done
    postconf -c "$base/etc" -M# smtp/inet
    printf '127.0.0.1:%s inet n - n - - smtpd\n' "$port" >>"$base/etc/master.cf"
    postconf -c "$base/etc" -F '*/*/chroot = n'
    postconf -c "$base/etc" -n >"$TMP/postfix-main.cf.txt"
}

# postfix_configure_relay BASE PORT SINK_PORT PROCESS_LIMIT [SETTING...]:
# postfix_configure for a loopback relay: smtpd on 127.0.0.1:PORT, every
# message relayed to [127.0.0.1]:SINK_PORT over up to 50 connections,
# default_process_limit = PROCESS_LIMIT, then SETTING...
postfix_configure_relay() {
    local base=$1 port=$2 sink_port=$3 procs=$4
    shift 4
    postfix_configure "$base" "$port" \
        "relayhost = [127.0.0.1]:$sink_port" \
        "inet_interfaces = loopback-only" \
        "default_process_limit = $procs" \
        "smtp_destination_concurrency_limit = 50" \
        "default_destination_concurrency_limit = 50" \
        "$@"
}

# postfix_start BASE PORT [NEED_PID]: `postfix -c BASE/etc check` and `start`
# (output in BASE/check.log, BASE/start.log; die on failure), PF_DIR set so that
# the EXIT trap stops it; PF_MASTER_PID from its pid file (die without one when
# NEED_PID is 1, the default); then die unless smtpd greets on 127.0.0.1:PORT
# within 30 s
postfix_start() {
    local base=$1 port=$2 need_pid=${3:-1} pidf="$1/queue/pid/master.pid"
    PF_DIR="$base/etc"
    postfix -c "$base/etc" check >"$base/check.log" 2>&1 || { cat "$base/check.log" >&2; die "postfix check failed"; }
    postfix -c "$base/etc" start >"$base/start.log" 2>&1 || { cat "$base/start.log" >&2; die "postfix start failed"; }
    for _ in $(seq 100); do [[ -s $pidf ]] && break; sleep 0.1; done
    PF_MASTER_PID=$(tr -dc 0-9 <"$pidf" 2>/dev/null || true)
    if (( need_pid )) && [[ -z "$PF_MASTER_PID" ]]; then die "postfix master pid not found"; fi
    wait_banner "$port" 30 || die "postfix smtpd did not answer on 127.0.0.1:$port"
}

# postfix_stop: `postfix -c PF_DIR stop`, wait up to 10 s for the master, then
# SIGKILL it and its children; clears PF_DIR and PF_MASTER_PID
postfix_stop() {
    local dir=$PF_DIR kids
    PF_DIR=""
    postfix -c "$dir" stop >/dev/null 2>&1 || true
    if [[ -n "$PF_MASTER_PID" ]]; then
        for _ in $(seq 100); do kill -0 "$PF_MASTER_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$PF_MASTER_PID" 2>/dev/null; then
            kids=$(pgrep -P "$PF_MASTER_PID" || true)
            # shellcheck disable=SC2086  # one word per pid
            kill -KILL "$PF_MASTER_PID" $kids 2>/dev/null || true
        fi
    fi
    PF_MASTER_PID=""
}

# postfix_log_warnings MAILLOG N: the first N warning/error/fatal/panic lines
# of a Postfix log (without the note that the active queue is full)
postfix_log_warnings() {
    grep -E 'warning|error|fatal|panic' "$1" | grep -v 'using all 4001 of the active queue' | head -n "$2"
}

# postfix_pids MASTER: the master's pid and its children's, one a line
postfix_pids() { echo "$1"; pgrep -P "$1" || true; }

# postfix_ticks MASTER: CPU ticks of Postfix so far: utime+stime of the live
# processes + the master's reaped children (cutime+cstime)
postfix_ticks() {
    local m=$1 pids p f=()
    pids=$(postfix_pids "$m")
    for p in $pids; do f+=("/proc/$p/stat"); done
    { cat "${f[@]}" 2>/dev/null || true; } | awk -v m="$m" '{ s += $14 + $15; if ($1 == m) s += $16 + $17 } END { print s + 0 }'
}

# postfix_sampler MASTER OUT: until killed, every 0.2 s write
# "<max sum VmRSS kB> <max sum Pss kB (every 0.4 s)> <max processes>" of the
# master and its children to OUT
postfix_sampler() {
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

# postfix_sampler_start MASTER OUT: postfix_sampler in the background (SAMPLER_PID)
postfix_sampler_start() { postfix_sampler "$1" "$2" & SAMPLER_PID=$!; }

# postfix_sampler_stop: stop the sampler; its OUT file holds the maxima
postfix_sampler_stop() {
    kill "$SAMPLER_PID" 2>/dev/null
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
}

# server_measure_begin SYS LABEL: before a load on the server under test
# (ringmail: ringmaild SERVER_PID; postfix: the instance of PF_MASTER_PID,
# whose memory sampler starts, into $TMP/pfmem-LABEL; anything else: none),
# its CPU ticks so far
SERVER_C0=0
server_measure_begin() {
    case $1 in
        ringmail) SERVER_C0=$(proc_ticks "$SERVER_PID") ;;
        postfix)  SERVER_C0=$(postfix_ticks "$PF_MASTER_PID")
                  postfix_sampler_start "$PF_MASTER_PID" "$TMP/pfmem-$2" ;;
    esac
}

# server_measure_end SYS LABEL: after the load: SERVER_CPU_TICKS since
# server_measure_begin; SERVER_HWM_KB (ringmaild VmHWM; Postfix: the sampler's
# peak summed VmRSS), SERVER_RSS_KB (ringmaild VmRSS now), SERVER_PSS_KB and
# SERVER_NPROC (Postfix); "null" where not measured
SERVER_CPU_TICKS=null SERVER_HWM_KB=null SERVER_RSS_KB=null SERVER_PSS_KB=null SERVER_NPROC=null
server_measure_end() {
    local c1
    SERVER_CPU_TICKS=null SERVER_HWM_KB=null SERVER_RSS_KB=null SERVER_PSS_KB=null SERVER_NPROC=null
    case $1 in
        ringmail) c1=$(proc_ticks "$SERVER_PID"); SERVER_CPU_TICKS=$(( c1 - SERVER_C0 ))
                  SERVER_RSS_KB=$(proc_status "$SERVER_PID" VmRSS); SERVER_HWM_KB=$(proc_status "$SERVER_PID" VmHWM) ;;
        postfix)  c1=$(postfix_ticks "$PF_MASTER_PID"); SERVER_CPU_TICKS=$(( c1 - SERVER_C0 ))
                  postfix_sampler_stop
                  read -r SERVER_HWM_KB SERVER_PSS_KB SERVER_NPROC <"$TMP/pfmem-$2" || true ;;
    esac
}

# ------------------------------------------------------------- ringmaild ----
# ringmail_toml DATA_DIR PORT SMARTHOST: the start of a bench ringmaild config
# (RM_SHARDS shards, SMTP on 127.0.0.1:PORT, relaying for 127.0.0.0/8 to
# SMARTHOST, "" = by MX); ends inside [relay]: the caller appends the rest
ringmail_toml() {
    require_positive_ints RM_SHARDS
    cat <<EOF
[server]
hostname = "bench.example.test"
data_dir = "$1"
shards = $RM_SHARDS
[[listener]]
protocol = "smtp"
address = "127.0.0.1:$2"
[relay]
smarthost = "$3"
allow_networks = ["127.0.0.0/8"]
EOF
}

# ringmail_toml_mx DATA_DIR PORT MX_PORT DEST_CONNS DNS_SERVER: a config of a
# ringmaild that delivers by MX lookup (resolver DNS_SERVER) to port MX_PORT,
# DEST_CONNS connections per destination and shard, no per-IP client limit
ringmail_toml_mx() {
    ringmail_toml "$1" "$2" ""
    cat <<EOF
[delivery]
smtp_port = $3
max_connections = $4
[dns]
servers = ["$5"]
[smtp]
max_connections_per_ip = 0
EOF
}

# ringmaild_start CONFIG LOG PORT: RINGMAILD --config CONFIG in the background
# (SERVER_PID, in PIDS), output to LOG; die (after LOG's last 20 lines) unless it
# greets on 127.0.0.1:PORT within 30 s
SERVER_PID=""
ringmaild_start() {
    "$RINGMAILD" --config "$1" >"$2" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_banner "$3" 30 || { tail -n 20 "$2" >&2; die "ringmaild did not answer on $3"; }
}

# ringmaild_stop [SECONDS]: stop_pid SERVER_PID SECONDS (10); SERVER_ALIVE = 1
# when it still ran until then, STOP_WHEN "after SIGTERM" or "BEFORE SIGTERM"
SERVER_ALIVE=1 STOP_WHEN=""
# shellcheck disable=SC2120  # the argument is optional
ringmaild_stop() {
    SERVER_ALIVE=1
    kill -0 "$SERVER_PID" 2>/dev/null || SERVER_ALIVE=0
    stop_pid "$SERVER_PID" "${1:-10}"
    if (( SERVER_ALIVE )); then STOP_WHEN="after SIGTERM"; else STOP_WHEN="BEFORE SIGTERM"; fi
}

# --------------------------------------------------------- blast, sink ----
# blast_start LABEL SECONDS CMD...: a `ringmail-blast send` CMD under `timeout
# SECONDS` in a stamped wrapper (run_stamped): $TMP/blast-LABEL.json, .err,
# .end; BLAST_PID (the wrapper's, in PIDS)
BLAST_PID=""
blast_start() {
    local label=$1 t=$2
    shift 2
    run_stamped "$TMP/blast-$label.end" "$TMP/blast-$label.json" "$TMP/blast-$label.err" timeout "$t" "$@" &
    BLAST_PID=$!
    PIDS+=("$BLAST_PID")
}

# blast_sink_start PREFIX LISTEN EXPECT DURATION [ARG...]: `ringmail-blast sink
# --listen LISTEN --expect EXPECT --duration DURATION --json ARG...` (BLAST) in
# a stamped wrapper (run_stamped): PREFIX.json, PREFIX.err, PREFIX.end;
# SINK_PID (the wrapper's, in PIDS)
SINK_PID=""
blast_sink_start() {
    local prefix=$1 listen=$2 expect=$3 duration=$4
    shift 4
    run_stamped "$prefix.end" "$prefix.json" "$prefix.err" \
        "$BLAST" sink --listen "$listen" --expect "$expect" --duration "$duration" --json "$@" &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
}

# sink_done_at SINK_JSON END_FILE -> the wall-clock time (Unix seconds, as
# $EPOCHREALTIME) at which a `ringmail-blast sink --expect N` counted its N-th
# message, from its JSON; when the sink never got there (stopped, timed out),
# the time its wrapper stamped into END_FILE when the process exited. The exit
# itself comes up to a poll (0.1 s) later, after the senders' QUIT, which would
# otherwise be counted in short runs.
sink_done_at() {
    local t
    t=$(grep -o '"expect_reached_at":[0-9.]*' "$1" 2>/dev/null | head -n 1 | cut -d: -f2 || true)
    if [[ -n $t ]]; then echo "$t"; else cat "$2"; fi
}

# ----------------------------------------------------------- MX and DNS ----
# mx_addrs M: MX_ADDRS = the addresses of bench/dns_zone.py's M MX hosts
# (mx0..mx{M-1}.bench.test -> 127.0.0.2 ..)
MX_ADDRS=()
mx_addrs() {
    local k
    MX_ADDRS=()
    for (( k = 0; k < $1; k++ )); do MX_ADDRS+=("127.0.0.$(( 2 + k ))"); done
}

# mx_listen PORT: "ADDR:PORT,..." for every MX_ADDRS (a sink's --listen)
mx_listen() {
    local listen="" a
    for a in "${MX_ADDRS[@]}"; do listen+="${listen:+,}$a:$1"; done
    echo "$listen"
}

# dns_zone_start DOMAINS MX_HOSTS LISTEN [HINT]: bench/dns_zone.py serving
# d1..dDOMAINS.example.test over MX_HOSTS MX hosts on LISTEN, in the background
# (DNS_PID, in PIDS); $TMP/dns.addr then holds the address it bound; die
# (with HINT) when it is not up within 10 s
DNS_PID=""
dns_zone_start() {
    "$PY" "$REPO_ROOT/bench/dns_zone.py" --domains "$1" --mx-hosts "$2" --listen "$3" \
        --ready-file "$TMP/dns.addr" --stats-file "$TMP/dns-stats.json" 2>"$TMP/dns.log" &
    DNS_PID=$!
    PIDS+=("$DNS_PID")
    for _ in $(seq 100); do [[ -s $TMP/dns.addr ]] && break; kill -0 "$DNS_PID" 2>/dev/null || break; sleep 0.1; done
    [[ -s $TMP/dns.addr ]] || { tail -n 3 "$TMP/dns.log" >&2; die "the DNS server did not start${4:+ $4}"; }
}

# dns_queries: the number of queries the DNS server answered so far (SIGUSR1
# makes it write its stats file)
dns_queries() {
    rm -f "$TMP/dns-stats.json"
    kill -USR1 "$DNS_PID"
    for _ in $(seq 50); do [[ -s $TMP/dns-stats.json ]] && break; sleep 0.05; done
    grep -o '"queries": [0-9]*' "$TMP/dns-stats.json" | grep -o '[0-9]*$' || echo 0
}

# ---------------------------------------------------------------- report ----
# utc_stamp: the UTC date and time in result file names (20261125T085155Z)
utc_stamp() { date -u +%Y%m%dT%H%M%SZ; }

# git_commit: `git describe --always --dirty` of the repo, "unknown" outside git
git_commit() { git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown; }

# postfix_version: the installed Postfix's mail_version, "unknown" without one
postfix_version() { postconf -dh mail_version 2>/dev/null || echo unknown; }

# print_footer OUT: the closing lines: CPU busy before the run, results file
print_footer() {
    echo "CPU busy (other work) in the second before the run: ${BUSY_BEFORE}%"
    echo "results: ${1#"$REPO_ROOT"/}"
}
