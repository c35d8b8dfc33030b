# Shared by scripts/demo and scripts/test: installs what a fresh machine lacks.
set -euo pipefail

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
  # Installs the Debian packages given that are not installed yet.
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_rust() {
  if ! have cargo; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      echo "cargo not found: install the Rust toolchain (https://rustup.rs) first" >&2
      exit 2
    fi
  fi
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until something listens on 127.0.0.1:$1 (or $2 seconds pass).
wait_port() {
  local port=$1 deadline=$((SECONDS + ${2:-30}))
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "nothing listens on port $port" >&2; return 1; }
    sleep 0.2
  done
}

# SoftHSM2 for the PKCS#11 tests; exports SEALTRAIL_TEST_PKCS11_MODULE.
ensure_softhsm() {
  apt_install softhsm2 opensc
  local m
  for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
           /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so; do
    if [ -f "$m" ]; then export SEALTRAIL_TEST_PKCS11_MODULE="$m"; return 0; fi
  done
  echo "libsofthsm2.so not found after installing softhsm2" >&2
  exit 2
}

# moto server (S3 with Object Lock, KMS) in a virtualenv of its own; exports
# SEALTRAIL_MOTO_SERVER (the moto_server executable the tests start on a free port).
ensure_moto() {
  apt_install python3-venv
  local venv="$(repo_root)/target/moto-venv"
  if [ ! -x "$venv/bin/moto_server" ]; then
    echo "==> installing moto[server] into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6'
  fi
  export SEALTRAIL_MOTO_SERVER="$venv/bin/moto_server"
}

# DuckDB and sqlglot, for the tests of the query-engine recipes (docs/investigations.md).
ensure_query_tools() {
  apt_install python3-venv
  local venv="$(repo_root)/target/query-venv"
  if ! "$venv/bin/python" -c 'import duckdb, sqlglot' 2>/dev/null; then
    echo "==> installing duckdb and sqlglot into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'duckdb>=1.1,<2' 'sqlglot>=25,<28'
  fi
  export SEALTRAIL_QUERY_PYTHON="$venv/bin/python"
}

# Dev PKI, dev key and trust bundle in $1 (a fresh directory); origin $2; binaries in $BIN.
make_dev_setup() {
  local dir=$1 origin=$2
  rm -rf "$dir"
  mkdir -p "$dir"
  "$BIN/sealtrail-devpki" --out "$dir/pki" >/dev/null
  "$BIN/sealtrail-signer" dev-keygen --out "$dir/signer-dev.key" --algorithm ed25519 2>/dev/null
  "$BIN/sealtrail-signer" export-trust --origin "$origin" --dev-key "$dir/signer-dev.key" \
    --insecure-dev-key --out "$dir/trust.json"
}

# Starts the signer and the ingester on free loopback ports with the setup in $1, origin
# $2, store $3 (a directory or s3://…; extra ingester flags after it). Sets SIGNER_PORT,
# INGEST_PORT, SIGNER_PID, INGEST_PID, METRICS_PORT (the ingester's) and appends to PIDS.
start_stack() {
  local dir=$1 origin=$2 store=$3
  shift 3
  local p="$dir/pki"
  SIGNER_PORT=$(free_port)
  INGEST_PORT=$(free_port)
  METRICS_PORT=$(free_port)
  "$BIN/sealtrail-signer" serve --origin "$origin" --state-dir "$dir/signer-state" \
    --listen "127.0.0.1:$SIGNER_PORT" --tls-cert "$p/signer.pem" --tls-key "$p/signer.key" \
    --client-ca "$p/ca.pem" --dev-key "$dir/signer-dev.key" --insecure-dev-key \
    2>"$dir/signer.log" &
  SIGNER_PID=$!
  PIDS+=("$SIGNER_PID")
  "$BIN/sealtrail-ingester" --origin "$origin" --listen "127.0.0.1:$INGEST_PORT" \
    --tls-cert "$p/ingester-server.pem" --tls-key "$p/ingester-server.key" --client-ca "$p/ca.pem" \
    --store "$store" --signer-url "https://127.0.0.1:$SIGNER_PORT" \
    --signer-ca "$p/ca.pem" --signer-cert "$p/ingester-client.pem" --signer-key "$p/ingester-client.key" \
    --signer-server-name localhost --allow-client kube-apiserver \
    --metrics-listen "127.0.0.1:$METRICS_PORT" "$@" 2>"$dir/ingester.log" &
  INGEST_PID=$!
  PIDS+=("$INGEST_PID")
  wait_port "$SIGNER_PORT"
  wait_port "$INGEST_PORT"
}

# Waits until the ingester (metrics on $METRICS_PORT) has sealed every batch it acknowledged
# ($1 seconds at most, default 120).
wait_sealed() {
  local deadline=$((SECONDS + ${1:-120})) n
  while :; do
    n=$(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '$1 == "sealtrail_ingester_pending_batches" {print $2}')
    [ "$n" = "0" ] && return 0
    [ $SECONDS -lt $deadline ] || { echo "batches still unsealed: $n" >&2; return 1; }
    sleep 0.1
  done
}

stop_pids() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
