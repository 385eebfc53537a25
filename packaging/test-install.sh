#!/usr/bin/env bash
# The install test of `make package`: the .deb unpacked into a throwaway root; its contents,
# declared runtime libraries and systemd unit checked; the installed binary started with the
# installed example config (only the certificates, a P-Mode and the data folder filled in).
set -euo pipefail
deb=${1:?usage: test-install.sh PACKAGE.deb}
tools=${2:-target/debug/ventanilla}   # a development build, for the throw-away PKI
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
root=$work/root
dpkg-deb -x "$deb" "$root"
info=$(dpkg-deb -I "$deb")
for dep in libxml2 libssl libc6; do
    grep -q "Depends:.*$dep" <<<"$info" || { echo "FAIL: the package does not declare $dep"; exit 1; }
done
bin=$root/usr/bin/ventanilla
unit=
for candidate in "$root/lib/systemd/system/ventanilla.service" "$root/usr/lib/systemd/system/ventanilla.service"; do
    [ -f "$candidate" ] && unit=$candidate
done
test -x "$bin" || { echo "FAIL: no /usr/bin/ventanilla"; exit 1; }
test -n "$unit" || { echo "FAIL: no systemd unit"; exit 1; }
test -f "$root/etc/ventanilla/ventanilla.toml" || { echo "FAIL: no example config"; exit 1; }
grep -q 'Depends:.*adduser' <<<"$info" || { echo "FAIL: the postinst needs adduser"; exit 1; }
for setting in ProtectSystem=strict ReadWritePaths=/var/lib/ventanilla NoNewPrivileges=yes LimitNOFILE= Restart=on-failure User=ventanilla; do
    grep -q "^$setting" "$unit" || { echo "FAIL: the unit lacks $setting"; exit 1; }
done
# systemd's own check of the unit, with ExecStart pointing at the unpacked binary.
sed "s#^ExecStart=/usr/bin/ventanilla#ExecStart=$bin#" "$unit" > "$work/ventanilla.service"
if ! out=$(systemd-analyze verify "$work/ventanilla.service" 2>&1); then
    echo "FAIL: systemd-analyze verify: $out"; exit 1
fi
# Only errors fail the check; report what systemd said.
[ -n "$out" ] && echo "systemd-analyze: $out"
"$bin" --version
if "$bin" demo --help >/dev/null 2>&1; then echo "FAIL: the packaged binary has the demo (build it without default features)"; exit 1; fi
# The installed example config, completed as an operator would.
etc=$work/etc
cp -r "$root/etc/ventanilla" "$etc"
"$tools" certs demo --out "$work/pki" --names xx,yy >/dev/null
mkdir -p "$etc/certs" "$etc/pmodes"
cp "$work/pki/xx-tls.pem" "$etc/certs/tls.pem"; cp "$work/pki/xx-tls.key" "$etc/certs/tls.key"
cp "$work/pki/ca.pem" "$etc/certs/tls-ca.pem"; cp "$work/pki/ca.pem" "$etc/certs/ca.pem"; cp "$work/pki/ca.crl" "$etc/certs/ca.crl"
cp "$work/pki/xx-sign-ed25519.pem" "$etc/certs/sign.pem"; cp "$work/pki/xx-sign-ed25519.key" "$etc/certs/sign.key"
cp "$work/pki/xx-enc-x25519.pem" "$etc/certs/enc.pem"; cp "$work/pki/xx-enc-x25519.key" "$etc/certs/enc.key"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$etc/api-token"; chmod 600 "$etc/api-token"
"$bin" pmode new --id xx-yy --profile edelivery-2.0 \
    --party "XX-CHANGE-ME,https://127.0.0.1:9/as4,$work/pki/xx-sign-ed25519.pem,$work/pki/xx-enc-x25519.pem" \
    --party "YY-PARTNER,https://127.0.0.1:9/as4,$work/pki/yy-sign-ed25519.pem,$work/pki/yy-enc-x25519.pem" \
    --out "$etc/pmodes/xx-yy.toml" >/dev/null
sed -i -e "s#/var/lib/ventanilla#$work/data#" -e 's#0.0.0.0:8443#127.0.0.1:0#' -e 's#127.0.0.1:8080#127.0.0.1:0#' \
    -e 's#127.0.0.1:8090#127.0.0.1:0#' "$etc/ventanilla.toml"
"$bin" config check "$etc/ventanilla.toml" >/dev/null
"$bin" serve --config "$etc/ventanilla.toml" 2> "$work/serve.log" &
pid=$!
for _ in $(seq 100); do
    grep -q "access point started" "$work/serve.log" && break
    sleep 0.1
done
grep -q "access point started" "$work/serve.log" || { echo "FAIL: the installed binary did not start:"; cat "$work/serve.log"; exit 1; }
kill -TERM "$pid"; wait "$pid"; pid=
echo "package: install test passed ($(basename "$deb"))"
