#!/usr/bin/env bash
# First boot of an on-prem appliance VM: users, directories, PKI, configs. Run once as root.
# It never initializes the store: that is a key ceremony (docs/runbook-ceremonies.md).
#   first-boot.sh XKS_NAME                     the first (or only) node: forms the cluster
#   first-boot.sh XKS_NAME --join PKI_DIR      a further node: uses the cluster's PKI (copied
#                                              from the first node's /root/vhsm-pki) and waits
#                                              for `vhsm-admin cluster add-node` (docs/cluster.md)
set -euo pipefail

HOSTNAME_XKS="${1:-}"
if [ -z "$HOSTNAME_XKS" ]; then
  echo "usage: $0 <public DNS name of the XKS endpoint, e.g. xks.example.com> [--join PKI_DIR]" >&2
  exit 1
fi
JOIN_PKI=""
if [ "${2:-}" = "--join" ]; then
  JOIN_PKI="${3:?--join needs the PKI directory of the cluster}"
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
  if [ -n "$JOIN_PKI" ]; then
    # One CA for the cluster; the first node's `pki init` must have named every node
    # (--vhsmd-san for each host), since every node presents that vhsmd certificate.
    install -d -m 0700 /root/vhsm-pki
    cp -a "$JOIN_PKI"/. /root/vhsm-pki/
  else
    vhsm-admin pki init --dir /root/vhsm-pki --xks-san "$HOSTNAME_XKS" --vhsmd-san "$(hostname -f)"
  fi
  install -m 0600 -o vhsm -g vhsm /root/vhsm-pki/{ca.crt,vhsmd.crt,vhsmd.key,peer.crt,peer.key} /etc/vhsm/pki/
  install -m 0600 -o xks-front -g xks-front /root/vhsm-pki/{ca.crt,crypto.crt,crypto.key,xks-front.crt,xks-front.key} /etc/xks-front/pki/
  echo "PKI written to /root/vhsm-pki (admin.crt/.key and auditor.crt/.key are for operators: move them off this host)"
fi

if [ ! -f /etc/vhsm/vhsmd.toml ]; then
  install -m 0600 -o vhsm -g vhsm /usr/share/vhsm-xks/vhsmd.example.toml /etc/vhsm/vhsmd.toml
  # This node's cluster identity: reachable as its FQDN, peer certificate from the PKI.
  sed -i -e "s|^#advertise = .*|advertise = \"https://$(hostname -f):7443\"|" \
         -e 's|^#peer_cert = |peer_cert = |' -e 's|^#peer_key = |peer_key = |' /etc/vhsm/vhsmd.toml
  if [ -n "$JOIN_PKI" ]; then
    sed -i 's|^bootstrap = true|bootstrap = false|' /etc/vhsm/vhsmd.toml
  fi
fi
[ -f /etc/xks-front/xks-front.toml ] || install -m 0600 -o xks-front -g xks-front /usr/share/vhsm-xks/xks-front.example.toml /etc/xks-front/xks-front.toml
[ -f /etc/xks-front/keystores.toml ] || install -m 0600 -o xks-front -g xks-front /usr/share/vhsm-xks/keystores.example.toml /etc/xks-front/keystores.toml

systemctl daemon-reload
systemctl enable --now vhsmd.service
echo
if [ -n "$JOIN_PKI" ]; then
  echo "vhsmd is running empty and waits to join. From an operator host:"
  echo "  vhsm-admin --pki-dir PKI --endpoint https://FIRST-NODE:7443 cluster add-node --address https://$(hostname -f):7443"
  echo "  vhsm-admin --pki-dir PKI --endpoint https://$(hostname -f):7443 unseal"
  exit 0
fi
echo "vhsmd is running SEALED and UNINITIALIZED. Next: the init ceremony (docs/runbook-ceremonies.md):"
echo "  vhsm-admin --pki-dir /root/vhsm-pki init --shares 5 --threshold 3 --share-dir ./shares"
echo "Then create keys, generate XKS credentials (vhsm-admin xks credentials new), edit"
echo "/etc/xks-front/keystores.toml and: systemctl enable --now xks-front.service"
