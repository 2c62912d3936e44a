#!/usr/bin/env bash
# A private CA and server certificates for Switchboard's internal TLS (NATS,
# and gRPC to presence if you want it), with openssl. For Docker Compose,
# the local cluster and first Kubernetes installs; use your own PKI or
# cert-manager in production (docs/operations.md, "TLS").
#
#   deploy/tls/certs.sh DIR NAME SAN...
#   deploy/tls/certs.sh deploy/tls nats nats localhost 127.0.0.1
#
# Writes DIR/ca.pem and DIR/ca.key (kept when they exist, so certificates
# made later chain to the same CA) and DIR/NAME.pem, DIR/NAME.key: an EC
# P-256 certificate for the given DNS names and IP addresses, valid DAYS
# (default 365) days. Keys are readable by their owner only.
set -euo pipefail

if [ $# -lt 3 ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
command -v openssl >/dev/null || { echo "certs.sh: openssl is required" >&2; exit 1; }
DIR=$1 NAME=$2
shift 2
DAYS=${DAYS:-365}
mkdir -p "$DIR"
umask 077

if [ ! -s "$DIR/ca.pem" ] || [ ! -s "$DIR/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days $((DAYS * 2)) \
    -subj "/CN=Switchboard internal CA" -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
  chmod 644 "$DIR/ca.pem"
fi

sans=()
for san in "$@"; do
  if [[ $san =~ ^[0-9.]+$ || $san == *:* ]]; then sans+=("IP:$san"); else sans+=("DNS:$san"); fi
done
ext=$(mktemp)
trap 'rm -f "$ext" "$DIR/$NAME.csr"' EXIT
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$(IFS=,; echo "${sans[*]}")" >"$ext"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
  -keyout "$DIR/$NAME.key" -out "$DIR/$NAME.csr" 2>/dev/null
openssl x509 -req -in "$DIR/$NAME.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
  -days "$DAYS" -extfile "$ext" -out "$DIR/$NAME.pem" 2>/dev/null
chmod 644 "$DIR/$NAME.pem"
echo "$DIR/$NAME.pem: ${sans[*]} (CA $DIR/ca.pem, $DAYS days)"
