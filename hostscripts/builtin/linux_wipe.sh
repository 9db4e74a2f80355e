#!/bin/sh
# Built-in device action: wipe a Linux host. Irreversible.
# Erases the start and end of every disk (partition tables, file system and LUKS headers), so
# neither the data nor the system can be recovered or booted, then forces a reboot.
set -u
echo "wiping host"
for disk in $(lsblk -dnpo NAME,TYPE | awk '$2 == "disk" {print $1}'); do
  wipefs --all --force "$disk" >/dev/null 2>&1 || true
  size=$(blockdev --getsz "$disk" 2>/dev/null || echo 0)
  dd if=/dev/zero of="$disk" bs=1M count=64 conv=fsync status=none 2>/dev/null || true
  if [ "$size" -gt 131072 ]; then
    dd if=/dev/zero of="$disk" bs=512 seek=$((size - 131072)) count=131072 conv=fsync status=none 2>/dev/null || true
  fi
  echo "erased $disk"
done
sync
# Report before the machine goes away: orbit posts this output when the script returns.
(sleep 10; echo b > /proc/sysrq-trigger) >/dev/null 2>&1 &
exit 0
