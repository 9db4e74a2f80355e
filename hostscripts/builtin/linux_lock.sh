#!/bin/sh
# Built-in device action: lock a Linux host.
# Expires every regular account (uid 1000-60000), which refuses new logins of any kind (password,
# SSH key, display manager), then locks and ends the open sessions. unlock reverses it.
set -u
state=/var/lib/fleet-device-lock
mkdir -p "$state" && chmod 700 "$state"
: > "$state/locked-users"
for user in $(awk -F: '$3 >= 1000 && $3 < 60000 {print $1}' /etc/passwd); do
  if usermod --expiredate 1 "$user"; then
    echo "$user" >> "$state/locked-users"
    echo "login disabled: $user"
  fi
done
if command -v loginctl >/dev/null 2>&1; then
  loginctl lock-sessions || true
  for session in $(loginctl list-sessions --no-legend | awk '$3 != "root" {print $1}'); do
    loginctl terminate-session "$session" || true
  done
fi
echo "host locked"
