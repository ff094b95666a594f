#!/bin/sh
# A private CA and a server certificate for Mosquitto's TLS listener.
#   deploy/mosquitto/make-certs.sh mqtt.town.example [OUT_DIR]
# Writes OUT_DIR (default: deploy/mosquitto/certs) ca.crt, ca.key, server.crt,
# server.key. Give devices ca.crt (yukimizu: mqtt.tls_ca_file) and keep ca.key
# offline. The host name must be the one devices connect to: it goes into the
# certificate's subjectAltName, and clients refuse any other.
set -eu
host="${1:?usage: make-certs.sh HOSTNAME [OUT_DIR]}"
out="${2:-$(dirname "$0")/certs}"
days="${CERT_DAYS:-825}"
mkdir -p "$out"
umask 077
openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -sha256 \
  -subj "/CN=yukimizu MQTT CA" -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$host" \
  -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
case "$host" in
  *[!0-9.]*) san="DNS:$host" ;;
  *) san="IP:$host" ;;
esac
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > "$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
  -CAcreateserial -days "$days" -sha256 -extfile "$out/server.ext" -out "$out/server.crt" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext" "$out/ca.srl"
# Mosquitto (uid 1883 in the eclipse-mosquitto image) must read the key.
chmod 644 "$out/ca.crt" "$out/server.crt"
chmod 640 "$out/server.key"
echo "wrote $out/ca.crt, $out/server.crt, $out/server.key (CN and SAN: $host)"
