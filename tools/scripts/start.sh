#!/usr/bin/env bash
# README quick start: install what is missing, build, and run ringmaild in the
# foreground with the embedded default configuration (SMTP on 127.0.0.1:2525,
# queue under ./var). Extra arguments go to ringmaild (e.g. --config FILE).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
tools/scripts/install-deps.sh
if [[ ! -f build/build.ninja ]]; then
  meson setup build --buildtype=release >/dev/null
fi
ninja -C build >/dev/null
echo "ringmaild: starting (Ctrl-C stops it; logs below)" >&2
exec build/tools/ringmaild "$@"
