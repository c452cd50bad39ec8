#!/usr/bin/env bash
# README quick start: install what is missing, build, and run ringmaild in the
# foreground with the embedded default configuration (SMTP on 127.0.0.1:2525,
# queue under ./var). Extra arguments go to ringmaild (e.g. --config FILE).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
tools/scripts/install-deps.sh
log=build-start.log
# The build's own output goes to a log (it is long); a failure shows its end.
build_or_explain() {
  if ! "$@" >"$log" 2>&1; then
    echo "start.sh: build failed: $*" >&2
    tail -n 40 "$log" >&2
    echo "start.sh: the whole output is in $log" >&2
    exit 1
  fi
}
if [[ ! -f build/build.ninja ]]; then
  echo "start.sh: configuring and building (the first build takes a few minutes on 2 cores)" >&2
  build_or_explain meson setup build --buildtype=release
else
  echo "start.sh: building what changed" >&2
fi
build_or_explain ninja -C build
echo "ringmaild: starting (Ctrl-C stops it; logs below)" >&2
exec build/tools/ringmaild "$@"
