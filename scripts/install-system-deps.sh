#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, only when one is missing.
# Package post-install scripts must not start system services (CI has its own PostgreSQL/MariaDB).
set -euo pipefail
need=()
command -v restic >/dev/null || need+=(restic)
command -v rclone >/dev/null || need+=(rclone)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v fusermount >/dev/null || need+=(fuse)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]} (run as root, or install them yourself)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
rm_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; rm_policy=1
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
[ -n "$rm_policy" ] && rm -f /usr/sbin/policy-rc.d
exit 0
