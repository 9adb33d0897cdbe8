#!/usr/bin/env bash
# Quick start: builds the appliance and runs it on loopback with safe defaults, then prints how
# to call it. Everything lives in ./.dev (PKI, store, configs, logs); `deploy/dev-down.sh` stops it.
#   ./deploy/dev-up.sh             one vhsmd node (a one-member cluster) + xks-front
#   ./deploy/dev-up.sh --nodes 3   a three-node cluster, xks-front in front of all three
# Either way .dev/appliance.env is a shell-sourceable summary for scripts and benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEV="$ROOT/.dev"
VHSMD_PORT=${VHSMD_PORT:-7443}
XKS_PORT=${XKS_PORT:-8443}
METRICS_PORT=${METRICS_PORT:-9464}
URI_PATH=/example/kms/xks/v1
NODES=1
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=${2:?--nodes needs a number}; shift 2 ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "dev-up: unknown argument $1 (try --nodes 3)" >&2; exit 1 ;;
  esac
done
case "$NODES" in
  [1-7]) ;;
  *) echo "dev-up: --nodes must be 1 to 7" >&2; exit 1 ;;
esac

if [ -t 1 ]; then
  say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
else
  say() { printf '==> %s\n' "$*"; }
fi

say "Building release binaries (first time: a few minutes)"
cargo build --release --bins --quiet
BIN="$ROOT/target/release"

if [ -d "$DEV" ]; then
  say "Stopping and wiping the previous dev appliance in .dev"
  "$ROOT/deploy/dev-down.sh" >/dev/null 2>&1 || true
  rm -rf "$DEV"
fi
umask 077
mkdir -p "$DEV"/{logs,xks}

say "Generating a private PKI (CA, server and role certificates) in .dev/pki"
"$BIN/vhsm-admin" pki init --dir "$DEV/pki" >/dev/null

write_node_config() { # index bootstrap
  local i=$1 port=$((VHSMD_PORT + $1 - 1))
  cat > "$DEV/vhsmd-$i.toml" <<CONF
node_id = "vhsm-dev-$i"
data_dir = "$DEV/vhsm-data-$i"

[listen]
addr = "127.0.0.1:$port"

[tls]
cert = "$DEV/pki/vhsmd.crt"
key = "$DEV/pki/vhsmd.key"
client_ca = "$DEV/pki/ca.crt"

[roles]
crypto = ["xks-front"]
admin = ["admin"]
auditor = ["auditor"]
peer = ["vhsm-peer"]

[cluster]
advertise = "https://127.0.0.1:$port"
bootstrap = $2
peer_cert = "$DEV/pki/peer.crt"
peer_key = "$DEV/pki/peer.key"

[metrics]
addr = "127.0.0.1:$((METRICS_PORT + $1))"

[log]
format = "text"
level = "info"
CONF
}

admin_of() { echo "$BIN/vhsm-admin --endpoint https://127.0.0.1:$((VHSMD_PORT + $1 - 1)) --pki-dir $DEV/pki"; }

ENDPOINTS=""
PIDS=""
for i in $(seq 1 "$NODES"); do
  if [ "$i" -eq 1 ]; then write_node_config 1 true; else write_node_config "$i" false; fi
  say "Starting vhsmd node $i on 127.0.0.1:$((VHSMD_PORT + i - 1)) (mutual TLS)"
  nohup "$BIN/vhsmd" --config "$DEV/vhsmd-$i.toml" >"$DEV/logs/vhsmd-$i.log" 2>&1 &
  echo $! > "$DEV/vhsmd-$i.pid"
  PIDS="$PIDS $!"
  ENDPOINTS="$ENDPOINTS https://127.0.0.1:$((VHSMD_PORT + i - 1))"
  for _ in $(seq 1 100); do
    $(admin_of "$i") status >/dev/null 2>&1 && break
    sleep 0.1
  done
done
PIDS=${PIDS# }
ENDPOINTS=${ENDPOINTS# }
ADMIN=("$BIN/vhsm-admin" --endpoint "https://127.0.0.1:$VHSMD_PORT" --pki-dir "$DEV/pki")

say "Initializing the store (passphrase mode; the dev passphrase is in .dev/passphrase, 0600)"
head -c 24 /dev/urandom | base64 > "$DEV/passphrase"
# The passphrase is entered twice (confirmation), as at the terminal.
cat "$DEV/passphrase" "$DEV/passphrase" | "${ADMIN[@]}" init --passphrase --passphrase-fd 0 >/dev/null
"${ADMIN[@]}" unseal --passphrase-fd 0 < "$DEV/passphrase" >/dev/null

say "Creating the demo key 'demo-key' and the health-check key 'xks-health'"
"${ADMIN[@]}" key create demo-key --usage encrypt,decrypt --label purpose=demo >/dev/null
"${ADMIN[@]}" key create xks-health --usage encrypt,decrypt --label purpose=health >/dev/null

for i in $(seq 2 "$NODES"); do
  say "Adding node $i to the cluster and unsealing it"
  "${ADMIN[@]}" cluster add-node --address "https://127.0.0.1:$((VHSMD_PORT + i - 1))" >/dev/null
  $(admin_of "$i") unseal --passphrase-fd 0 < "$DEV/passphrase" >/dev/null
done

say "Generating an XKS SigV4 credential"
CREDS_JSON=$("$BIN/vhsm-admin" xks credentials new --uri-path "$URI_PATH" --secret-out "$DEV/xks/secret-1" --output json)
AKID=$(printf '%s' "$CREDS_JSON" | python3 -c 'import json,sys; print(json.load(sys.stdin)["XksProxyAuthenticationCredential"]["AccessKeyId"])')
SECRET=$(cat "$DEV/xks/secret-1")
printf '%s\n' "$CREDS_JSON" > "$DEV/xks/kms-proxy-configuration.json"

cat > "$DEV/xks/keystores.toml" <<CONF
[[keystore]]
name = "example"
path_prefix = "/example"
# Every key of the store, with a rate limit high enough for benchmarks.
keys = ["*"]
rate_limit_per_sec = 100000
burst = 200000

[[keystore.credential]]
access_key_id = "$AKID"
secret_file = "$DEV/xks/secret-1"
CONF

cat > "$DEV/xks/xks-front.toml" <<CONF
keystores_file = "$DEV/xks/keystores.toml"
fleet_size = 1
region = "us-east-1"

[listen]
addr = "127.0.0.1:$XKS_PORT"

[tls]
cert = "$DEV/pki/xks-front.crt"
key = "$DEV/pki/xks-front.key"

[metrics]
addr = "127.0.0.1:$METRICS_PORT"

[vhsm]
ca = "$DEV/pki/ca.crt"
client_cert = "$DEV/pki/crypto.crt"
client_key = "$DEV/pki/crypto.key"
deadline_ms = 150
health_key_id = "xks-health"
health_cache_secs = 10

CONF
for i in $(seq 1 "$NODES"); do
  cat >> "$DEV/xks/xks-front.toml" <<CONF

[[vhsm.nodes]]
id = "vhsm-dev-$i"
endpoint = "https://127.0.0.1:$((VHSMD_PORT + i - 1))"
server_name = "vhsmd"
CONF
done

say "Starting xks-front on https://xks.localhost:$XKS_PORT"
nohup "$BIN/xks-front" --config "$DEV/xks/xks-front.toml" >"$DEV/logs/xks-front.log" 2>&1 &
echo $! > "$DEV/xks-front.pid"
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$XKS_PORT) 2>/dev/null && break
  sleep 0.1
done

CURL="curl -sS --resolve xks.localhost:$XKS_PORT:127.0.0.1 --cacert $DEV/pki/ca.crt \\
  --aws-sigv4 'aws:amz:us-east-1:kms-xks-proxy' --user '$AKID:$SECRET' \\
  -X POST -H 'Content-Type: application/json' \\
  --data '{\"requestMetadata\":{\"awsPrincipalArn\":\"arn:aws:iam::111122223333:user/dev\",\"kmsKeyArn\":\"arn:aws:kms:us-east-1:111122223333:key/dev\",\"kmsOperation\":\"Encrypt\",\"kmsRequestId\":\"dev-1\"},\"plaintext\":\"SGVsbG8gV29ybGQh\",\"encryptionAlgorithm\":\"AES_GCM\",\"ciphertextDataIntegrityValueAlgorithm\":\"SHA_256\"}' \\
  https://xks.localhost:$XKS_PORT$URI_PATH/keys/demo-key/encrypt"
printf '%s\n' "$CURL" > "$DEV/encrypt-example.sh"

cat > "$DEV/appliance.env" <<ENV
# The dev appliance, for scripts: source .dev/appliance.env
XKS_URL=https://xks.localhost:$XKS_PORT
XKS_URI_PREFIX=/example
XKS_ACCESS_KEY_ID=$AKID
XKS_SECRET_ACCESS_KEY_FILE=$DEV/xks/secret-1
XKS_CA_FILE=$DEV/pki/ca.crt
XKS_KEY_ID=demo-key
VHSM_ENDPOINTS="$ENDPOINTS"
VHSM_PIDS="$PIDS"
XKS_FRONT_PID=$(cat "$DEV/xks-front.pid")
VHSM_PKI_DIR=$DEV/pki
VHSM_PASSPHRASE_FILE=$DEV/passphrase
ENV

cat <<INFO

The dev appliance is running (state in .dev, logs in .dev/logs):

  XKS endpoint        https://xks.localhost:$XKS_PORT   (CA: .dev/pki/ca.crt)
  XKS URI path        $URI_PATH
  Access key id       $AKID
  Secret access key   $SECRET
  KMS proxy config    .dev/xks/kms-proxy-configuration.json
  vhsmd nodes (mTLS)  $ENDPOINTS
  Admin CLI           target/release/vhsm-admin --endpoint https://127.0.0.1:$VHSMD_PORT --pki-dir .dev/pki status
  Cluster status      target/release/vhsm-admin --endpoint https://127.0.0.1:$VHSMD_PORT --pki-dir .dev/pki cluster status
  Metrics             http://127.0.0.1:$METRICS_PORT/metrics (xks-front), :$((METRICS_PORT + 1))... (vhsmd nodes)
  For scripts         source .dev/appliance.env

Encrypt "Hello World!" with demo-key (also saved as .dev/encrypt-example.sh):

$CURL

Stop it with: deploy/dev-down.sh
INFO
