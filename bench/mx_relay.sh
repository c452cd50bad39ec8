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
# Environment: RINGMAILD, BLAST, RESULTS_DIR, KEEP_TMP=1, DNS_ADDR.
set -euo pipefail

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

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
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
for v in RM_N PF_N CONNS SIZE DOMAINS MX_HOSTS TIMEOUT; do
    [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || { echo "$v must be a positive integer" >&2; exit 2; }
done
(( MX_HOSTS <= 250 )) || { echo "--mx-hosts must be at most 250" >&2; exit 2; }

# ------------------------------------------------ private mount namespace ----
if [[ "${MXBENCH_IN_NS:-}" != 1 ]]; then
    [[ $(id -u) -eq 0 ]] || { echo "mx_relay.sh needs root (a private mount namespace and a DNS server on port 53)" >&2; exit 2; }
    exec unshare --mount --propagation private env MXBENCH_IN_NS=1 bash "$0" "${ARGS[@]}"
fi

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"
RINGMAILD="${RINGMAILD:-$REPO_ROOT/build/tools/ringmaild}"
BLAST="${BLAST:-$REPO_ROOT/build/tools/ringmail-blast}"
RESULTS_DIR="${RESULTS_DIR:-$REPO_ROOT/bench/results}"
PY=/usr/bin/python3
TICKS=$(getconf CLK_TCK)
want() { [[ -z "$ONLY" || "$ONLY" == "$1" ]]; }

log() { printf '[mx_relay %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup ----
TMP=""
PIDS=()
PF_DIR="" PF_MASTER_PID="" SAMPLER_PID="" DNS_PID=""
cleanup() {
    local rc=$?
    set +e
    [[ -n "$SAMPLER_PID" ]] && kill "$SAMPLER_PID" 2>/dev/null
    [[ -n "$PF_DIR" ]] && postfix_stop
    local p
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

# ------------------------------------------------------------------ ports ----
port_in_use() {   # LISTEN on any address, v4 or v6
    local hex; hex=$(printf '%04X' "$1")
    awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$(( 20000 + RANDOM % 12000 ))   # below the ephemeral range
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
wait_listen() {
    local deadline=$(( SECONDS + $2 ))
    while (( SECONDS < deadline )); do port_in_use "$1" && return 0; sleep 0.05; done
    return 1
}
STOP_RC=0
stop_pid() {
    local p=$1
    STOP_RC=0
    if kill -TERM "$p" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && { log "pid $p ignored SIGTERM for 10 s: SIGKILL"; kill -KILL "$p" 2>/dev/null; }
    fi
    wait "$p" 2>/dev/null || STOP_RC=$?
}

# ------------------------------------------------------------ measurement ----
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
proc_status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }   # kB
postfix_pids() { echo "$1"; pgrep -P "$1" || true; }
postfix_ticks() {   # live postfix processes (utime+stime) + the master's reaped children
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
dns_stats() {   # -> "<queries> <cpu ticks>" of the DNS server now
    local q
    rm -f "$TMP/dns-stats.json"
    kill -USR1 "$DNS_PID"
    for _ in $(seq 50); do [[ -s $TMP/dns-stats.json ]] && break; sleep 0.05; done
    q=$(grep -o '"queries": [0-9]*' "$TMP/dns-stats.json" | grep -o '[0-9]*$' || echo 0)
    echo "$q $(proc_ticks "$DNS_PID")"
}

# ------------------------------------------------------------- DNS, sinks ----
MX_ADDRS=()
for (( k = 0; k < MX_HOSTS; k++ )); do MX_ADDRS+=("127.0.0.$(( 2 + k ))"); done

dns_start() {
    "$PY" "$REPO_ROOT/bench/dns_zone.py" --domains "$DOMAINS" --mx-hosts "$MX_HOSTS" --listen "$DNS_ADDR:53" \
        --ready-file "$TMP/dns.addr" --stats-file "$TMP/dns-stats.json" 2>"$TMP/dns.log" &
    DNS_PID=$!
    PIDS+=("$DNS_PID")
    for _ in $(seq 100); do [[ -s $TMP/dns.addr ]] && break; kill -0 "$DNS_PID" 2>/dev/null || break; sleep 0.1; done
    [[ -s $TMP/dns.addr ]] || { tail -n 3 "$TMP/dns.log" >&2; die "the DNS server did not start on $DNS_ADDR:53 (in use? set DNS_ADDR to another 127.x address)"; }
}

SINK_PID="" SINK_JSON=""
sink_start() {   # $1 label, $2 expected messages
    local listen="" a
    for a in "${MX_ADDRS[@]}"; do listen+="${listen:+,}$a:$MX_PORT"; done
    SINK_JSON="$TMP/sink-$1.json"
    ( "$BLAST" sink --listen "$listen" --expect "$2" --duration "$TIMEOUT" --json -q \
        >"$SINK_JSON" 2>"$TMP/sink-$1.err"
      rc=$?; echo "$EPOCHREALTIME" >"$TMP/sink-$1.end"; exit $rc ) &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_listen "$MX_PORT" 10 || die "sink did not listen on port $MX_PORT"
}

# run_load SYS LABEL N PORT -> $TMP/cell-LABEL.json
run_load() {
    local sys=$1 label=$2 n=$3 port=$4
    local blast_json="$TMP/blast-$label.json" t0 c0 c1 d0 d1 blast_pid blast_rc=0 sink_rc=0
    local -a cmd=("$BLAST" send --to "127.0.0.1:$port" --connections "$CONNS" --messages "$n"
                  --size "$SIZE" --domains "$DOMAINS" --timeout 120 --json -q)
    log "[$label] ${cmd[*]}"
    read -r d0 _ < <(dns_stats)
    local dcpu0; dcpu0=$(proc_ticks "$DNS_PID")
    case $sys in
        ringmail) c0=$(proc_ticks "$SERVER_PID") ;;
        postfix)  c0=$(postfix_ticks "$PF_MASTER_PID")
                  postfix_sampler "$PF_MASTER_PID" "$TMP/pfmem-$label" & SAMPLER_PID=$! ;;
    esac
    t0=$EPOCHREALTIME
    ( timeout $(( TIMEOUT + 30 )) "${cmd[@]}" >"$blast_json" 2>"$TMP/blast-$label.err"
      rc=$?; echo "$EPOCHREALTIME" >"$TMP/blast-$label.end"; exit $rc ) &
    blast_pid=$!
    PIDS+=("$blast_pid")
    wait "$blast_pid" || blast_rc=$?
    wait "$SINK_PID" || sink_rc=$?
    local t_inj t_e2e; t_inj=$(cat "$TMP/blast-$label.end"); t_e2e=$(sink_done_at "$SINK_JSON" "$TMP/sink-$label.end")
    local hwm_kb=null pss_kb=null nproc=null cpu_ticks
    case $sys in
        ringmail) c1=$(proc_ticks "$SERVER_PID"); hwm_kb=$(proc_status "$SERVER_PID" VmHWM) ;;
        postfix)  c1=$(postfix_ticks "$PF_MASTER_PID")
                  kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
                  read -r hwm_kb pss_kb nproc <"$TMP/pfmem-$label" || true ;;
    esac
    cpu_ticks=$(( c1 - c0 ))
    read -r d1 _ < <(dns_stats)
    local dcpu1; dcpu1=$(proc_ticks "$DNS_PID")
    [[ -s $blast_json ]] || echo null >"$blast_json"
    [[ -s $SINK_JSON ]] || echo null >"$SINK_JSON"
    (( blast_rc == 0 )) || { log "[$label] WARNING: blast exit code $blast_rc"; tail -n 5 "$TMP/blast-$label.err" >&2; }
    (( sink_rc == 0 )) || log "[$label] WARNING: sink exit code $sink_rc"
    {
        printf '{"system": "%s", "label": "%s", "messages": %s, "t0": %s, ' "$sys" "$label" "$n" "$t0"
        printf '"inject_s": %s, "e2e_s": %s, "blast_rc": %s, "sink_rc": %s, ' \
            "$(awk -v a="$t_inj" -v b="$t0" 'BEGIN{printf "%.4f", a-b}')" \
            "$(awk -v a="$t_e2e" -v b="$t0" 'BEGIN{printf "%.4f", a-b}')" "$blast_rc" "$sink_rc"
        printf '"server_cpu_s": %s, "server_peak_rss_kb": %s, "server_peak_pss_kb": %s, "server_max_processes": %s, ' \
            "$(awk -v t="$cpu_ticks" -v h="$TICKS" 'BEGIN{printf "%.2f", t/h}')" "${hwm_kb:-null}" "${pss_kb:-null}" "${nproc:-null}"
        printf '"dns_queries": %s, "dns_cpu_s": %s, ' "$(( d1 - d0 ))" \
            "$(awk -v t="$(( dcpu1 - dcpu0 ))" -v h="$TICKS" 'BEGIN{printf "%.2f", t/h}')"
        printf '"command": "%s", "blast": %s, "sink": %s}\n' "${cmd[*]}" "$(cat "$blast_json")" "$(cat "$SINK_JSON")"
    } >"$TMP/cell-$label.json"
    log "[$label] inject $(awk -v a="$t_inj" -v b="$t0" 'BEGIN{printf "%.2f", a-b}') s, e2e $(awk -v a="$t_e2e" -v b="$t0" 'BEGIN{printf "%.2f", a-b}') s, DNS queries $(( d1 - d0 ))"
}

# ---------------------------------------------------------------- ringmail ----
SERVER_PID=""
phase_ringmail() {
    local base="$TMP/ringmail" port
    port=$(free_port)
    sink_start ringmail "$RM_N"
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
smarthost = ""
allow_networks = ["127.0.0.0/8"]
[delivery]
smtp_port = $MX_PORT
max_connections = $RM_DEST_CONNS
[dns]
servers = ["$DNS_ADDR:53"]
[smtp]
max_connections_per_ip = 0
EOF
    cp "$base/ringmail.toml" "$TMP/ringmail.toml.txt"
    "$RINGMAILD" --config "$base/ringmail.toml" >"$base/ringmaild.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_banner "$port" 30 || { tail -n 20 "$base/ringmaild.log" >&2; die "ringmaild did not answer on $port"; }
    NSHARDS=$(grep -o 'ready: [0-9]* shards' "$base/ringmaild.log" | grep -o '[0-9]*' || echo '?')
    run_load ringmail ringmail "$RM_N" "$port"
    local alive=1
    kill -0 "$SERVER_PID" 2>/dev/null || alive=0
    stop_pid "$SERVER_PID"
    (( STOP_RC == 0 )) || log "[ringmail] ringmaild exit status $STOP_RC $( ((alive)) && echo 'after SIGTERM' || echo 'BEFORE SIGTERM')"
    echo "$STOP_RC $alive" >"$TMP/ringmail.exit"
    grep -E ': (warning|error|fatal)' "$base/ringmaild.log" | head -n 5 >"$TMP/ringmail.warn" || true
    grep -c -E ': (warning|error|fatal)' "$base/ringmaild.log" >"$TMP/ringmail.nwarn" || true
    grep -c 'status=deferred' "$base/ringmaild.log" >"$TMP/ringmail.deferred" || true
    grep -c 'DNS temporary failure' "$base/ringmaild.log" >"$TMP/ringmail.dnsfail" || true
    rm -rf "$base/var"
}

# ----------------------------------------------------------------- postfix ----
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
    port=$(free_port)
    sink_start postfix "$PF_N"
    mkdir -p "$base/etc" "$base/queue" "$base/data"
    chmod 755 "$TMP" "$base"; chown postfix "$base/data"
    local master_src=/usr/share/postfix/master.cf.dist
    [[ -r $master_src ]] || master_src=/etc/postfix/master.cf
    cp "$master_src" "$base/etc/master.cf"
    : >"$base/etc/main.cf"
    local pf_smtp_procs=$(( RM_DEST_CONNS * MX_HOSTS * NSHARDS_GUESS ))
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
        "relayhost ="
        "default_transport = smtp"
        "smtp_host_lookup = dns"
        "disable_dns_lookups = no"
        "smtp_tcp_port = $MX_PORT"
        "mynetworks = 127.0.0.0/8"
        "inet_interfaces = 127.0.0.1"
        "inet_protocols = ipv4"
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination"
        "in_flow_delay = 0"
        "default_process_limit = $(( pf_smtp_procs + CONNS + 50 ))"
        "default_destination_concurrency_limit = 20"
        "smtp_destination_concurrency_limit = 20"
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
    postconf -c "$base/etc" -M# smtp/inet
    printf '127.0.0.1:%s inet n - n - - smtpd\n' "$port" >>"$base/etc/master.cf"
    postconf -c "$base/etc" -F '*/*/chroot = n'
    postconf -c "$base/etc" -F "smtp/unix/process_limit = $pf_smtp_procs"
    postconf -c "$base/etc" -n >"$TMP/postfix-main.cf.txt"
    postconf -c "$base/etc" -M smtp/unix >>"$TMP/postfix-main.cf.txt"
    PF_DIR="$base/etc"
    postfix -c "$base/etc" check >"$base/check.log" 2>&1 || { cat "$base/check.log" >&2; die "postfix check failed"; }
    postfix -c "$base/etc" start >"$base/start.log" 2>&1 || { cat "$base/start.log" >&2; die "postfix start failed"; }
    local pidf="$base/queue/pid/master.pid"
    for _ in $(seq 100); do [[ -s $pidf ]] && break; sleep 0.1; done
    PF_MASTER_PID=$(tr -dc 0-9 <"$pidf" 2>/dev/null || true)
    [[ -n "$PF_MASTER_PID" ]] || die "postfix master pid not found"
    wait_banner "$port" 30 || die "postfix smtpd did not answer on 127.0.0.1:$port"
    run_load postfix postfix "$PF_N" "$port"
    postfix_stop
    cp "$base/maillog" "$TMP/postfix-maillog" 2>/dev/null || true
    grep -c 'status=deferred' "$base/maillog" >"$TMP/postfix.deferred" 2>/dev/null || true
    grep -E 'warning|error|fatal|panic' "$base/maillog" | grep -v 'using all 4001 of the active queue' \
        | head -n 5 >"$TMP/postfix.warn" || true
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
$PY -c 'import dnslib' 2>/dev/null || die "python3-dnslib is missing: apt-get install python3-dnslib"
TMP=$(mktemp -d /tmp/mx_relay.XXXXXX)
chmod 755 "$TMP"
cp "$BLAST" "$TMP/mxbench-blast"; BLAST="$TMP/mxbench-blast"
if want ringmail; then cp "$RINGMAILD" "$TMP/mxbench-ringmaild"; RINGMAILD="$TMP/mxbench-ringmaild"; fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NSHARDS_GUESS=$(nproc)          # ringmaild's shards = 0 -> one per CPU
NSHARDS=$NSHARDS_GUESS
MX_PORT=$(free_port)
cpu_busy_pct() {
    local a b
    a=$(head -n 1 /proc/stat); sleep 1; b=$(head -n 1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x); split(b, y); t = 0
        for (k = 2; k <= 9; k++) t += y[k] - x[k]
        i = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", (t > 0 ? 100 * (t - i) / t : 0) }'
}
BUSY_BEFORE=$(cpu_busy_pct)
(( BUSY_BEFORE > 10 )) && log "WARNING: the CPUs were ${BUSY_BEFORE}% busy before the run: numbers will be skewed"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
log "ringmail N=$RM_N postfix N=$PF_N conns=$CONNS size=$SIZE domains=$DOMAINS mx_hosts=$MX_HOSTS (${MX_ADDRS[0]}..${MX_ADDRS[-1]}:$MX_PORT) dns=$DNS_ADDR:53 tmp=$TMP"
dns_start
settle() { sync; sleep 2; }
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
DNS_ADDR=$DNS_ADDR RM_DEST_CONNS=$RM_DEST_CONNS NSHARDS=$NSHARDS \
PFVER="$(postconf -dh mail_version 2>/dev/null || echo unknown)" \
COMMIT="$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)" \
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
echo "CPU busy (other work) in the second before the run: ${BUSY_BEFORE}%"
echo "results: ${OUT#"$REPO_ROOT"/}"
