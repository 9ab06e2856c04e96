#!/bin/sh
# Makes throwaway TLS material for the tests in DIR (created if missing):
#   ca.pem ca.key                 the test CA
#   server.pem server.key         CN=localhost, SAN DNS:localhost IP:127.0.0.1, signed by the CA
#   expired.pem expired.key       same names, validity entirely in the past
#   wronghost.pem wronghost.key   CN and SAN DNS:wrong.example only
#   client.pem client.key         extendedKeyUsage clientAuth, signed by the CA
#   selfsigned.pem selfsigned.key self-signed, SAN DNS:localhost IP:127.0.0.1
#   otherca.pem otherca.key       a second CA nobody trusts
#   unknownca.pem unknownca.key   a localhost server certificate signed by otherca
#   cnonly.pem cnonly.key         CN=localhost and no SAN (CN fallback)
# EC P-256 keys; quiet on success.
#   tests/gen-certs.sh DIR
set -eu

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
cd "$1"

log=gen-certs.log
: >"$log"
run() {
    "$@" >>"$log" 2>&1 || { echo "gen-certs: failed: $*" >&2; cat "$log" >&2; exit 1; }
}

# One config holds every extension profile and the throwaway `openssl ca`
# setup used to backdate the expired certificate.
cat >openssl.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[wronghost_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[cnonly_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[selfsigned_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyCertSign
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
[ca]
default_ca = backdate
[backdate]
dir = .
database = ./ca-index.txt
new_certs_dir = ./ca-newcerts
certificate = ./ca.pem
private_key = ./ca.key
serial = ./ca-serial
default_md = sha256
policy = any
unique_subject = no
email_in_dn = no
[any]
commonName = supplied
EOF

key() {
    run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"
}

serial() {
    echo "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
}

# A self-signed certificate: NAME CN EXTENSIONS
self_signed() {
    key "$1"
    run openssl req -config openssl.cnf -new -x509 -key "$1.key" -subj "/CN=$2" -days 3650 \
        -sha256 -set_serial "$(serial)" -extensions "$3" -out "$1.pem"
}

# A certificate signed by a CA: NAME CN EXTENSIONS CA
signed() {
    key "$1"
    run openssl req -config openssl.cnf -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
    run openssl x509 -req -in "$1.csr" -CA "$4.pem" -CAkey "$4.key" -set_serial "$(serial)" \
        -days 825 -sha256 -extfile openssl.cnf -extensions "$3" -out "$1.pem"
    rm -f "$1.csr"
}

self_signed ca "sluice test CA" ca_ext
self_signed otherca "sluice other CA" ca_ext
self_signed selfsigned localhost selfsigned_ext
signed server localhost server_ext ca
signed wronghost wrong.example wronghost_ext ca
signed client "sluice test client" client_ext ca
signed cnonly localhost cnonly_ext ca
signed unknownca localhost server_ext otherca

# `openssl x509 -req` cannot backdate; `openssl ca` can.
key expired
run openssl req -config openssl.cnf -new -key expired.key -subj "/CN=localhost" -out expired.csr
rm -rf ca-newcerts ca-index.txt*
mkdir ca-newcerts
: >ca-index.txt
serial | sed 's/^0x//' >ca-serial
run openssl ca -config openssl.cnf -batch -notext -in expired.csr -out expired.pem \
    -startdate 20200101000000Z -enddate 20210101000000Z -extfile openssl.cnf -extensions server_ext
rm -rf expired.csr ca-newcerts ca-index.txt* ca-serial* "$log"
