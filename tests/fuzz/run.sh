#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/*.cpp) with clang in a separate build
# dir and runs each one for a bounded time on its seed corpus; writes one JUnit
# test case per target to $build/fuzz-junit.xml (a failure holds the tail of the
# crash / leak / timeout / OOM report). Called by tools/scripts/test.sh.
#
# Exit status: 0 every target ran clean; 1 a target failed (see the JUnit file);
# 2 the targets could not be built or run (no JUnit file is left behind).
#
# Environment:
#   RINGMAIL_FUZZ_BUILD_DIR  build directory (default: build-fuzz)
#   FUZZ_SECONDS             seconds per target (default: 20)
#   FUZZ_JOBS                targets run at once (default: number of cores)
#   FUZZ_TARGETS             space-separated subset (default: all)
#   FUZZ_ARGS                extra libFuzzer flags (e.g. "-only_ascii=1")
#
# A longer session by hand, e.g. one hour on the command parser using 4 cores:
#   FUZZ_SECONDS=3600 FUZZ_JOBS=1 FUZZ_TARGETS=fuzz_smtp_command FUZZ_ARGS="-fork=4" tests/fuzz/run.sh
# or run a target directly (new inputs go to the first directory):
#   build-fuzz/tests/fuzz/fuzz_smtp_command -max_total_time=3600 \
#     build-fuzz/fuzz-run/fuzz_smtp_command/corpus tests/fuzz/corpus/fuzz_smtp_command
# Reproduce a crash: build-fuzz/tests/fuzz/<target> <crash file>.
# Inputs that found bugs go to tests/fuzz/crashes/<target>/; they are replayed
# first on every run, so a bug that is not fixed keeps failing.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build=${RINGMAIL_FUZZ_BUILD_DIR:-build-fuzz}
seconds=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
junit="$build/fuzz-junit.xml"
py=/usr/bin/python3
all_targets=(fuzz_smtp_command fuzz_smtp_address fuzz_smtp_data_reader fuzz_smtp_reply
             fuzz_smtp_dot_stuffing fuzz_store_envelope fuzz_smtp_mime_downgrade)
read -r -a targets <<<"${FUZZ_TARGETS:-${all_targets[*]}}"

infra() { echo "fuzz/run.sh: $*" >&2; rm -f "$junit"; exit 2; }
rm -f "$junit"

# 1. Configure (clang; everything but the fuzz targets is left unbuilt).
command -v clang++ >/dev/null || infra "clang++ not found (tools/scripts/install-deps.sh --test installs clang)"
setup_args=(-Dfuzz=true -Dbench=disabled --buildtype=debugoptimized)
if [[ -f "$build/meson-private/coredata.dat" ]]; then
  CXX=clang++ meson setup --reconfigure "$build" "${setup_args[@]}" </dev/null >/dev/null \
    || CXX=clang++ meson setup --wipe "$build" "${setup_args[@]}" </dev/null >/dev/null \
    || infra "meson setup $build failed"
else
  CXX=clang++ meson setup "$build" "${setup_args[@]}" </dev/null >/dev/null \
    || infra "meson setup $build failed"
fi

# 2. Build only the fuzz targets (alias target 'fuzz' in tests/fuzz/meson.build).
ninja -C "$build" fuzz </dev/null || infra "building the fuzz targets failed"

# 3. Run. Each target gets a fresh work corpus (new inputs land there, the seeds
#    in tests/fuzz/corpus/ are only read) and an artifact dir for crash files.
run_dir="$build/fuzz-run"
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

run_one() {
  local t=$1 exe="$build/tests/fuzz/$1" dir="$run_dir/$1"
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  local inputs=("$dir/corpus")
  [[ -d tests/fuzz/corpus/$t ]] && inputs+=("tests/fuzz/corpus/$t")
  [[ -d tests/fuzz/crashes/$t ]] && inputs+=("tests/fuzz/crashes/$t")
  local start=$SECONDS rc
  # The outer timeout only catches a wedged process; libFuzzer stops itself.
  # shellcheck disable=SC2086
  timeout -k 10 $((seconds + 120)) "$exe" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" ${FUZZ_ARGS:-} "${inputs[@]}" \
    </dev/null >"$dir/log" 2>&1
  rc=$?
  echo "$rc $((SECONDS - start))" >"$dir/status"
}

for t in "${targets[@]}"; do
  [[ -x "$build/tests/fuzz/$t" ]] || infra "target $t was not built"
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, $jobs at a time" >&2
pids=()
for t in "${targets[@]}"; do
  while (( $(jobs -rp | wc -l) >= jobs )); do wait -n; done
  run_one "$t" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

# 4. JUnit: one case per target. A target passes only if it exited 0 and
#    libFuzzer reports that it ran (the "Done N runs" line).
"$py" - "$junit" "$run_dir" "${targets[@]}" <<'EOF'

import os, re, sys
import xml.etree.ElementTree as ET

junit, run_dir, targets = sys.argv[1], sys.argv[2], sys.argv[3:]
bad_xml = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd]")
suite = ET.Element("testsuite", name="fuzz", tests=str(len(targets)))
failures = 0
total = 0.0
for t in targets:
    d = os.path.join(run_dir, t)
    try:
        rc, secs = open(os.path.join(d, "status")).read().split()
        rc, secs = int(rc), float(secs)
    except (OSError, ValueError):
        rc, secs = -1, 0.0
    try:
        log = open(os.path.join(d, "log"), encoding="utf-8", errors="replace").read()
    except OSError:
        log = ""
    total += secs
    case = ET.SubElement(suite, "testcase", classname="fuzz", name=t, time=f"{secs:.1f}")
    done = re.search(r"^Done (\d+) runs", log, re.M)
    if rc == 0 and done and int(done.group(1)) > 0:
        print(f"fuzz: {t}: ok, {done.group(1)} runs in {secs:.0f}s", file=sys.stderr)
        continue
    failures += 1
    if rc in (124, 137):
        msg = "hung: killed by the outer timeout"
    else:
        m = re.search(r"^(==\d+== ?ERROR: .*|SUMMARY: .*|.*FUZZ_CHECK failed: .*|.*runtime error: .*)$", log, re.M)
        msg = m.group(1).strip() if m else f"exit status {rc}" + ("" if done else ", no 'Done N runs' line")
    arts = sorted(os.listdir(os.path.join(d, "artifacts"))) if os.path.isdir(os.path.join(d, "artifacts")) else []
    if arts:
        msg += f" (input: {os.path.join(d, 'artifacts', arts[0])})"
    tail = "\n".join(log.splitlines()[-120:])
    f = ET.SubElement(case, "failure", message=bad_xml.sub("?", msg[:300]))
    f.text = bad_xml.sub("?", tail)
    print(f"fuzz: {t}: FAILED: {msg}", file=sys.stderr)
suite.set("failures", str(failures))
suite.set("time", f"{total:.1f}")
ET.ElementTree(suite).write(junit, encoding="utf-8", xml_declaration=True)
sys.exit(1 if failures else 0)
EOF
rc=$?
case $rc in
  0|1) exit "$rc" ;;
  *) infra "writing $junit failed (python exited $rc)" ;;
esac
