#!/usr/bin/env bash
# Installs the Debian packages l3ha's build, tests and lab need, if missing.
# Runs apt-get only when something is missing, and only as root.
set -euo pipefail
want=(iproute2 iputils-ping nftables keepalived postgresql python3-openstackclient ca-certificates keystone uwsgi-core uwsgi-plugin-python3 tempest rabbitmq-server python3-oslo.messaging neutron-server neutron-l3-agent neutron-linuxbridge-agent python3-pymysql mariadb-server iptables conntrack conntrackd iputils-arping chromium)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "missing packages: ${missing[*]}; run as root or install them with apt-get" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
