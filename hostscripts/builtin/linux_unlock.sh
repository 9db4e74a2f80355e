#!/bin/sh
# Built-in device action: unlock a Linux host locked by linux_lock.sh (its accounts log in again).
set -u
state=/var/lib/fleet-device-lock
if [ ! -f "$state/locked-users" ]; then
  echo "no lock record found; nothing to unlock"
  exit 0
fi
while read -r user; do
  [ -n "$user" ] && usermod --expiredate "" "$user" && echo "login enabled: $user"
done < "$state/locked-users"
rm -f "$state/locked-users"
echo "host unlocked"
