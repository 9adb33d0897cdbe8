#!/usr/bin/env bash
# Builds the vhsm-xks Debian package (binaries, systemd units, example configs, docs) with dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
cargo build --release --bins
STAGE=$(mktemp -d)
chmod 0755 "$STAGE"
trap 'rm -rf "$STAGE"' EXIT
install -D -m 0755 target/release/vhsmd "$STAGE/usr/bin/vhsmd"
install -D -m 0755 target/release/xks-front "$STAGE/usr/bin/xks-front"
install -D -m 0755 target/release/vhsm-admin "$STAGE/usr/bin/vhsm-admin"
install -D -m 0644 deploy/systemd/vhsmd.service "$STAGE/lib/systemd/system/vhsmd.service"
install -D -m 0644 deploy/systemd/xks-front.service "$STAGE/lib/systemd/system/xks-front.service"
install -D -m 0644 deploy/logrotate-vhsm "$STAGE/etc/logrotate.d/vhsm-xks"
for f in vhsmd.example.toml xks-front.example.toml keystores.example.toml; do
  install -D -m 0644 "deploy/$f" "$STAGE/usr/share/vhsm-xks/$f"
done
install -D -m 0755 deploy/first-boot.sh "$STAGE/usr/share/vhsm-xks/first-boot.sh"
install -D -m 0644 README.md "$STAGE/usr/share/doc/vhsm-xks/README.md"
cp -r docs "$STAGE/usr/share/doc/vhsm-xks/docs"
install -d "$STAGE/DEBIAN"
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: vhsm-xks
Version: $VERSION
Architecture: $ARCH
Maintainer: vhsm-xks maintainers <ops@example.invalid>
Depends: adduser, systemd
Section: admin
Priority: optional
Description: virtual HSM appliance with an AWS KMS External Key Store (XKS) proxy
 vhsmd (software HSM, sealed sled store, gRPC over mutual TLS), xks-front (the AWS KMS
 XKS Proxy API v1) and vhsm-admin (key ceremonies). Run
 /usr/share/vhsm-xks/first-boot.sh once after installing.
CONTROL
cat > "$STAGE/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
for u in vhsm xks-front; do
  id "$u" >/dev/null 2>&1 || adduser --system --group --no-create-home --home /nonexistent "$u"
done
systemctl daemon-reload >/dev/null 2>&1 || true
POSTINST
chmod 0755 "$STAGE/DEBIAN/postinst"
OUT="target/vhsm-xks_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group --build "$STAGE" "$OUT"
echo "built $OUT"
