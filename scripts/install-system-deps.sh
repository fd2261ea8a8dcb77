#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, only when one is missing.
# Package post-install scripts must not start system services (CI runs its own PostgreSQL and
# MariaDB on the standard ports; the tests start private instances on other ports).
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have restic || need+=(restic)
have rclone || need+=(rclone)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
have strace || need+=(strace)
have setpriv || need+=(util-linux)
have sqlite3 || need+=(sqlite3)
have qemu-img || need+=(qemu-utils)
have radosgw || need+=(radosgw)
have ceph-mon || need+=(ceph-mon)
have ceph-osd || need+=(ceph-osd)
have ceph || need+=(ceph-common)
have mariadbd || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
have mariadb-backup || need+=(mariadb-backup)
[ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
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
if [ -n "$rm_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
exit 0
