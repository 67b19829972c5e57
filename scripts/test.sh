#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need
# (PostgreSQL 15 server binaries from Debian, the moto S3 server from PyPI
# into .venv), then runs formatting, lints and every test. Skips nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15)
command -v pg_dump >/dev/null || need_apt+=(postgresql-client-15)
command -v runuser >/dev/null || need_apt+=(util-linux)
# The file-fidelity tests set extended attributes, ACLs and capabilities.
command -v setfattr >/dev/null || need_apt+=(attr)
command -v setfacl >/dev/null || need_apt+=(acl)
command -v setcap >/dev/null || need_apt+=(libcap2-bin)
# The drill report test renders the HTML report in headless Chromium.
command -v chromium >/dev/null || need_apt+=(chromium)
# The daemon's metrics are checked with Debian's promtool and scraped by a
# real prometheus server (both in the prometheus package); its systemd
# units are checked with systemd-analyze.
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# The signature tests use signing keys made by OpenSSL and OpenSSH.
command -v openssl >/dev/null || need_apt+=(openssl)
command -v ssh-keygen >/dev/null || need_apt+=(openssh-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root to install: ${need_apt[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(printf '%s\n' "${need_apt[@]}" | sort -u)
fi

if [ ! -x .venv/bin/moto_server ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check 'moto[server]==5.2.5'
fi
# The Kubernetes manifests in examples/ are validated offline.
if [ ! -x .venv/bin/kubernetes-validate ]; then
  .venv/bin/pip install -q --disable-pip-version-check 'kubernetes-validate==1.37.0'
fi
export HOLDFAST_MOTO_SERVER="$PWD/.venv/bin/moto_server"
# A one-shot build gains nothing from incremental state, which would double
# the target directory's size on disk.
export CARGO_INCREMENTAL=0

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --no-fail-fast
