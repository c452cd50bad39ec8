#!/usr/bin/env bash
# The README test command: installs what the tests need, builds, runs every suite
# (GoogleTest unit tests through meson, then the pytest integration suite against the
# real daemon, then a short bounded libFuzzer run of the parsers, one case per target),
# and ends with one line "N passed, N failed[, N skipped]".
#
# It never stops at the first failing suite: every step runs, then the summary is
# printed, and the exit status is non-zero if any test failed or any suite could not
# run. Works non-interactively (CI=true, no stdin, no tty) from a clean clone.
#
# Environment:
#   RINGMAIL_BUILD_DIR   build directory (default: build)
#   PYTEST_ARGS          extra arguments for pytest (e.g. "-k smuggling -x")
#   RINGMAIL_SKIP_SANITIZERS=1   skip the ASan/UBSan pass (faster local runs; CI runs it)
#   FUZZ_SECONDS         seconds per fuzz target (default 20; see tests/fuzz/run.sh)
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$(pwd)
build=${RINGMAIL_BUILD_DIR:-build}
export RINGMAIL_BUILD_DIR="$build"
py=/usr/bin/python3        # Debian's python3 (has python3-pytest, python3-aiosmtpd), never a pyenv one

errors=()       # suites/steps that could not run; each counts as one failure in the summary
step() { echo "==> $*" >&2; }
fail() { echo "test.sh: $*" >&2; errors+=("$*"); }

# 1. Dependencies (build + test packages). Nothing else can run without them.
step "install dependencies"
if ! tools/scripts/install-deps.sh --test </dev/null; then
  fail "install-deps.sh --test failed"
fi

# 2. Configure. A configured build dir is reconfigured (cheap; picks up a new meson or
#    changed options); if that fails, it is wiped and set up again.
step "configure $build"
if [[ -f "$build/meson-private/coredata.dat" ]]; then
  meson setup --reconfigure "$build" </dev/null >/dev/null \
    || meson setup --wipe "$build" </dev/null \
    || fail "meson setup --wipe $build failed"
else
  meson setup "$build" </dev/null || fail "meson setup $build failed"
fi

# 3. Build.
step "build"
ninja -C "$build" </dev/null || fail "build failed"

# Stale results from an earlier run must never be counted.
meson_junit="$build/meson-logs/testlog.junit.xml"
pytest_junit="$build/pytest-junit.xml"
rm -f "$meson_junit" "$build/meson-logs/testlog.json" "$pytest_junit"
# GoogleTest writes <test>.xml into the build dir and meson reads it back: a stale one
# would hide a crash of the same executable in this run.
find "$build" -maxdepth 1 -name '*.xml' -delete 2>/dev/null

# 4. Unit tests (GoogleTest executables registered with protocol 'gtest').
step "unit tests (meson test)"
if [[ -f "$build/build.ninja" ]]; then
  meson test -C "$build" --print-errorlogs </dev/null
  # A non-zero exit with a junit file is test failures, counted from the file; without
  # one (e.g. the build failed) summarize.py counts the missing file as a failure.
  if [[ ! -f "$meson_junit" ]] && [[ -z "$(meson test -C "$build" --list </dev/null 2>/dev/null)" ]]; then
    echo "test.sh: no unit tests are registered with meson yet" >&2
    meson_junit=""
  fi
else
  fail "unit tests not run: $build is not configured"
fi

# 5. Integration tests (real daemon, real clients).
step "integration tests (pytest)"
timeout_args=()
if "$py" -c 'import pytest_timeout' 2>/dev/null; then
  timeout_args=(-p timeout --timeout=300)
fi
# shellcheck disable=SC2086
"$py" -m pytest tests/integration -q -p no:cacheprovider "${timeout_args[@]}" \
  --junitxml="$pytest_junit" ${PYTEST_ARGS:-} </dev/null
rc=$?
case $rc in
  0|1) ;;                                   # 1 = some tests failed; counted from the junit file
  5) fail "pytest collected no tests" ;;
  *) fail "pytest exited $rc (interrupted, internal or usage error)" ;;
esac

# 5b. The unit and integration suites again, against an AddressSanitizer +
#     UndefinedBehaviorSanitizer build (../shared/TESTING.md). The daemon exits
#     non-zero on any report (leaks included), which the integration fixtures catch.
asan=${RINGMAIL_ASAN_BUILD_DIR:-build-asan}
asan_unit_junit=""
asan_py_junit=""
if [[ "${RINGMAIL_SKIP_SANITIZERS:-0}" != 1 ]]; then
  step "sanitizer build ($asan): unit + integration"
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
  if [[ ! -f "$asan/build.ninja" ]]; then
    meson setup "$asan" --buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
      -Dbench=disabled </dev/null >/dev/null || fail "meson setup $asan failed"
  fi
  if ninja -C "$asan" </dev/null >/dev/null; then
    rm -f "$asan/meson-logs/testlog.junit.xml" "$asan/pytest-junit.xml"
    find "$asan" -maxdepth 1 -name '*.xml' -delete 2>/dev/null
    meson test -C "$asan" --print-errorlogs </dev/null
    asan_unit_junit="$asan/meson-logs/testlog.junit.xml"
    asan_py_junit="$asan/pytest-junit.xml"
    # shellcheck disable=SC2086
    RINGMAIL_BUILD_DIR="$asan" "$py" -m pytest tests/integration -q -p no:cacheprovider "${timeout_args[@]}" \
      --junitxml="$asan_py_junit" ${PYTEST_ARGS:-} </dev/null
    rc=$?
    case $rc in
      0|1) ;;
      *) fail "pytest (sanitizer build) exited $rc"; asan_py_junit="" ;;
    esac
  else
    fail "sanitizer build failed"
  fi
fi

# 6. Fuzz: builds the libFuzzer targets with clang in build-fuzz and runs each for a
#    bounded time (tests/fuzz/run.sh). Exit 0/1 = ran, results in its junit file;
#    anything else = it could not build or run, which counts as one failure.
step "fuzz (libFuzzer, bounded)"
fuzz_junit="${RINGMAIL_FUZZ_BUILD_DIR:-build-fuzz}/fuzz-junit.xml"
rm -f "$fuzz_junit"
tests/fuzz/run.sh </dev/null
rc=$?
case $rc in
  0|1) ;;
  *) fail "tests/fuzz/run.sh exited $rc (fuzz targets could not be built or run)"; fuzz_junit="" ;;
esac

# 7. One summary over every suite; its last line is "N passed, N failed[, N skipped]".
step "summary"
err_args=()
for e in "${errors[@]}"; do err_args+=(--error "$e"); done
# summarize.py exits non-zero when anything failed, a junit file is missing or an
# --error was given; nothing is printed after its last line.
exec "$py" tests/summarize.py "${err_args[@]}" ${meson_junit:+"$meson_junit"} "$pytest_junit" \
  ${asan_unit_junit:+"$asan_unit_junit"} ${asan_py_junit:+"$asan_py_junit"} ${fuzz_junit:+"$fuzz_junit"}
