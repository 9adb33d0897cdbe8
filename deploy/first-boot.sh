#!/usr/bin/env bash
# First boot of an on-prem appliance VM: users, directories, PKI, configs. Run once as root.
# It never initializes the store: that is a key ceremony (docs/runbook-ceremonies.md).
set -euo pipefail

HOSTNAME_XKS="${1:-}"
if [ -z "$HOSTNAME_XKS" ]; then
  echo "usage: $0 <public DNS name of the XKS endpoint, e.g. xks.example.com>" >&2
  exit 1
fi
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

umask 077
for u in vhsm xks-front; do
  id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
done
# xks-front may reach a co-located vhsmd over its [unix] socket (group vhsm, mode 0660).
usermod -a -G vhsm xks-front
install -d -m 0700 -o vhsm -g vhsm /var/lib/vhsm /etc/vhsm /etc/vhsm/pki
install -d -m 0700 -o xks-front -g xks-front /etc/xks-front /etc/xks-front/pki /etc/xks-front/secrets
install -d -m 0750 /var/log/vhsm /var/log/xks-front

# Internal PKI for the vhsmd <-> xks-front <-> vhsm-admin mTLS links. The certificate KMS sees on
# the XKS endpoint must come from a public CA instead (docs/aws-setup.md).
if [ ! -f /etc/vhsm/pki/ca.crt ]; then
  vhsm-admin pki init --dir /root/vhsm-pki --xks-san "$HOSTNAME_XKS" --vhsmd-san "$(hostname -f)"
  install -m 0600 -o vhsm -g vhsm /root/vhsm-pki/{ca.crt,vhsmd.crt,vhsmd.key} /etc/vhsm/pki/
  install -m 0600 -o xks-front -g xks-front /root/vhsm-pki/{ca.crt,crypto.crt,crypto.key,xks-front.crt,xks-front.key} /etc/xks-front/pki/
  echo "PKI written to /root/vhsm-pki (admin.crt/.key and auditor.crt/.key are for operators: move them off this host)"
fi

[ -f /etc/vhsm/vhsmd.toml ] || install -m 0600 -o vhsm -g vhsm /usr/share/vhsm-xks/vhsmd.example.toml /etc/vhsm/vhsmd.toml
[ -f /etc/xks-front/xks-front.toml ] || install -m 0600 -o xks-front -g xks-front /usr/share/vhsm-xks/xks-front.example.toml /etc/xks-front/xks-front.toml
[ -f /etc/xks-front/keystores.toml ] || install -m 0600 -o xks-front -g xks-front /usr/share/vhsm-xks/keystores.example.toml /etc/xks-front/keystores.toml

systemctl daemon-reload
systemctl enable --now vhsmd.service
echo
echo "vhsmd is running SEALED and UNINITIALIZED. Next: the init ceremony (docs/runbook-ceremonies.md):"
echo "  vhsm-admin --pki-dir /root/vhsm-pki init --shares 5 --threshold 3 --share-dir ./shares"
echo "Then create keys, generate XKS credentials (vhsm-admin xks credentials new), edit"
echo "/etc/xks-front/keystores.toml and: systemctl enable --now xks-front.service"
