#!/usr/bin/env bash
# Connection scale: hold many idle SMTP sessions open against ringmaild.
#
#   bash bench/idle_sessions.sh [--sessions 10000] [--probes 20] [--sources 1]
#
# 1. starts build/tools/ringmaild (private copy, temp data_dir, shards = 0,
#    [smtp] max_connections = 20000, max_connections_per_ip = 0) on 127.0.0.1
# 2. a Python asyncio client (Debian's /usr/bin/python3, stdlib only) opens
#    --sessions connections (source addresses 127.0.0.1 .. 127.0.0.<sources>,
#    round robin) and waits for each one's "220 " banner; they stay idle
# 3. with all of them open: ringmaild's VmRSS/VmHWM (/proc/PID/status), then
#    --probes NEW connections one after the other, time from connect() to the
#    220 line (p50/max), then VmRSS again
# 4. all sessions are closed, ringmaild is stopped with SIGTERM (its exit status
#    is reported), results -> bench/results/idle_sessions-<UTC date>.json
# Target: 10,000 idle sessions under 200 MiB RSS. Everything is on loopback;
# every process started here is stopped by pid on exit.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_NAME=idle
# shellcheck source=bench/lib.sh
source "$REPO_ROOT/bench/lib.sh"

SESSIONS=10000
PROBES=20
SOURCES=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --sessions) SESSIONS="$2"; shift 2 ;;
        --probes)   PROBES="$2"; shift 2 ;;
        --sources)  SOURCES="$2"; shift 2 ;;
        -h|--help)  header_usage 18 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

[[ -x $RINGMAILD ]] || die "ringmaild not built ($RINGMAILD): ninja -C build"
[[ -x $PY ]] || die "$PY not found"

# ringmaild (RM_PID) and the client (CLIENT_PID) are in PIDS while they run;
# they and the temp dir go on exit
RM_PID="" CLIENT_PID=""
CLEANUP_CHILDREN=0
set_cleanup_traps

# both ringmaild and the client need > SESSIONS descriptors
raise_nofile
NOFILE=$(ulimit -n)
(( NOFILE > SESSIONS + PROBES + 100 )) || die "ulimit -n is $NOFILE (hard limit $(ulimit -Hn)): too low for $SESSIONS sessions"

make_tmp idle_sessions
private_copy RINGMAILD idle-ringmaild
free_port port
mkdir -p "$TMP/var"
{
    ringmail_toml "$TMP/var" "$port" "127.0.0.1:9"
    cat <<EOF
[smtp]
max_connections = 20000
max_connections_per_ip = 0
EOF
} >"$TMP/ringmail.toml"
"$RINGMAILD" --config "$TMP/ringmail.toml" >"$TMP/ringmaild.log" 2>&1 &
RM_PID=$!
PIDS+=("$RM_PID")
for _ in $(seq 100); do grep -q ' ready: ' "$TMP/ringmaild.log" 2>/dev/null && break; sleep 0.1; done
grep -q ' ready: ' "$TMP/ringmaild.log" || { cat "$TMP/ringmaild.log" >&2; die "ringmaild did not start"; }
log "ringmaild pid $RM_PID on 127.0.0.1:$port, nofile $NOFILE; opening $SESSIONS sessions from $SOURCES source address(es)"

cat >"$TMP/idle_client.py" <<'PYEOF'
import asyncio, json, statistics, sys, time

port, n, probes, sources, pid = (int(a) for a in sys.argv[1:6])

def status(pid):
    d = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                d[k] = int(v.split()[0])
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    d["cpu_ticks"] = int(f[11]) + int(f[12])
    return d

async def banner(reader):
    while True:
        line = await reader.readline()
        if not line:
            return "EOF"
        s = line.decode("latin-1").rstrip("\r\n")
        if not s.startswith("220-"):
            return s

async def open_one(i, sem, held, errors):
    src = f"127.0.0.{1 + i % sources}"
    async with sem:
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0) if sources > 1 else None), 30)
            line = await asyncio.wait_for(banner(r), 30)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")
            return
    if line.startswith("220 "):
        held.append((r, w))
    else:
        errors.append(f"banner: {line[:80]}")
        w.close()

async def probe():
    t0 = time.perf_counter()
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    line = await asyncio.wait_for(banner(r), 10)
    dt = (time.perf_counter() - t0) * 1000
    w.write(b"QUIT\r\n")
    try:
        await asyncio.wait_for(w.drain(), 5)
        await asyncio.wait_for(r.readline(), 5)
    except Exception:  # noqa: BLE001
        pass
    w.close()
    return dt, line

async def main():
    out = {"sessions_wanted": n, "probes": probes, "sources": sources}
    out["before"] = status(pid)
    held, errors = [], []
    sem = asyncio.Semaphore(256)          # connects in flight at once
    t0 = time.perf_counter()
    await asyncio.gather(*(open_one(i, sem, held, errors) for i in range(n)))
    out["open_s"] = round(time.perf_counter() - t0, 3)
    out["sessions_held"] = len(held)
    out["open_errors"] = len(errors)
    out["open_error_samples"] = sorted(set(errors))[:5]
    await asyncio.sleep(1.0)              # let the server settle
    out["held"] = status(pid)
    lat, bad = [], []
    for _ in range(probes):
        try:
            dt, line = await probe()
            (lat if line.startswith("220 ") else bad).append(dt if line.startswith("220 ") else line[:80])
        except Exception as e:  # noqa: BLE001
            bad.append(f"{type(e).__name__}: {e}")
    out["probe_ms"] = [round(x, 3) for x in lat]
    out["probe_p50_ms"] = round(statistics.median(lat), 3) if lat else None
    out["probe_max_ms"] = round(max(lat), 3) if lat else None
    out["probe_failures"] = bad
    # still all alive? a closed session reads EOF at once
    dead = sum(1 for r, _ in held if r.at_eof())
    out["held_sessions_closed_by_server"] = dead
    out["after_probes"] = status(pid)
    for _, w in held:
        w.close()
    await asyncio.sleep(2.0)
    out["after_close"] = status(pid)
    print(json.dumps(out))

asyncio.run(main())
PYEOF

"$PY" "$TMP/idle_client.py" "$port" "$SESSIONS" "$PROBES" "$SOURCES" "$RM_PID" >"$TMP/client.json" 2>"$TMP/client.err" &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")
wait "$CLIENT_PID" || { cat "$TMP/client.err" >&2; die "client failed"; }
forget_pid "$CLIENT_PID"; CLIENT_PID=""
sleep 0.5
SERVER_PID=$RM_PID
ringmaild_stop
ALIVE=$SERVER_ALIVE RM_RC=$STOP_RC
forget_pid "$RM_PID"; RM_PID=""
WARN=$(grep -cE "$RM_WARN_RE" "$TMP/ringmaild.log" || true)
[[ $WARN -gt 0 ]] && { log "ringmaild logged $WARN warning/error lines, first ones:"; grep -E "$RM_WARN_RE" "$TMP/ringmaild.log" | head -n 5 >&2; }

mkdir -p "$RESULTS_DIR"
STAMP=$(utc_stamp)
OUT="$RESULTS_DIR/idle_sessions-$STAMP.json"
STAMP=$STAMP OUT=$OUT ALIVE=$ALIVE RM_RC=$RM_RC WARN=$WARN NOFILE=$NOFILE COMMIT="$(git_commit)" \
"$PY" - "$TMP/client.json" <<'PYEOF'
import json, os, platform, sys
c = json.load(open(sys.argv[1]))
b, h, a = c["before"], c["held"], c["after_probes"]
n = c["sessions_held"]
doc = {"benchmark": "idle_sessions", "date_utc": os.environ["STAMP"], "commit": os.environ["COMMIT"],
       "machine": {"nproc": os.cpu_count(), "kernel": platform.release(), "nofile": int(os.environ["NOFILE"])},
       "client": c,
       "rss_before_kib": b["VmRSS"], "rss_held_kib": h["VmRSS"], "hwm_held_kib": h["VmHWM"],
       "rss_after_probes_kib": a["VmRSS"], "rss_after_close_kib": c["after_close"]["VmRSS"],
       "rss_per_session_kib": round((h["VmRSS"] - b["VmRSS"]) / n, 2) if n else None,
       "ringmaild_alive_until_sigterm": os.environ["ALIVE"] == "1",
       "ringmaild_exit_status": int(os.environ["RM_RC"]), "ringmaild_log_warnings": int(os.environ["WARN"])}
# The issue's target is 10,000 sessions: a smaller run cannot meet it.
doc["target_met"] = n >= max(c["sessions_wanted"], 10000) and h["VmHWM"] < 200 * 1024
json.dump(doc, open(os.environ["OUT"], "w"), indent=1)
mib = lambda k: f"{k / 1024:.1f} MiB"
print()
print(f"idle sessions held: {n} of {c['sessions_wanted']} (open errors {c['open_errors']}, opened in {c['open_s']} s, "
      f"closed by the server while held: {c['held_sessions_closed_by_server']})")
print(f"ringmaild RSS: before {mib(b['VmRSS'])}, with sessions VmRSS {mib(h['VmRSS'])} / VmHWM {mib(h['VmHWM'])}, "
      f"after probes {mib(a['VmRSS'])}, after close {mib(c['after_close']['VmRSS'])}")
print(f"RSS per session: {doc['rss_per_session_kib']} KiB;  threads {h['Threads']}")
print(f"new connection -> 220 while held ({len(c['probe_ms'])} probes): p50 {c['probe_p50_ms']} ms, max {c['probe_max_ms']} ms;"
      f" failures {c['probe_failures']}")
print(f"target (10,000 sessions < 200 MiB): {'MET' if doc['target_met'] else 'NOT met'}"
      + ("" if n >= 10000 else f" (only {n} sessions were held)"))
print(f"ringmaild: exit status {doc['ringmaild_exit_status']} after SIGTERM" if doc["ringmaild_alive_until_sigterm"]
      else f"ringmaild: DIED before SIGTERM, exit status {doc['ringmaild_exit_status']}")
if c["open_error_samples"]:
    print("open errors, samples:", c["open_error_samples"])
PYEOF
echo "results: ${OUT#"$REPO_ROOT"/}"
