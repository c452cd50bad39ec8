#!/usr/bin/env bash
# Installs the Debian packages ringmail needs to build, run and test.
# Idempotent and quiet when everything is present; used by both README commands.
# Usage: tools/scripts/install-deps.sh [--test]   (--test adds the test-only packages)
set -euo pipefail

build_pkgs=(
  g++ meson ninja-build pkg-config
  liburing-dev libwolfssl-dev libc-ares-dev liblmdb-dev libmimalloc-dev
  libtomlplusplus-dev libfmt-dev libcli11-dev nlohmann-json3-dev libargon2-dev
  libgtest-dev libbenchmark-dev
)
test_pkgs=(
  python3 python3-pytest python3-pytest-timeout python3-aiosmtpd python3-dnslib swaks lmdb-utils curl openssl procps iproute2
  clang libclang-rt-14-dev   # tests/fuzz (libFuzzer + sanitizer runtimes; a Recommends, so named here)
  postfix                    # tests/integration/test_blast.py: smtp-sink / smtp-source interop
  # python3-dnslib above: tests/integration/dns_server.py (authoritative DNS for MX delivery tests)
)

want=("${build_pkgs[@]}")
if [[ "${1:-}" == "--test" ]]; then
  want+=("${test_pkgs[@]}")
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
