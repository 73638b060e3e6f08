#!/usr/bin/env bash
# image/build.sh - the Tollgate appliance: a bootable raw disk image (GPT,
# UEFI *and* legacy BIOS, plus qcow2 for VMs) of Debian bookworm (minbase,
# with -updates and -security), systemd, nftables, the release binary, its
# units (systemd/), the rulesets and a commented /etc/tollgate/tollgate.toml
# (overlay/). Nothing secret is in it: machine-id, the master key, the
# agent CA and the TLS certificate are made on each machine's first boot.
#
# Built from ../shared/reference/image/build.sh (same no-mount, no-loop
# method), with Tollgate's own units and files.
#
# Needs root (mmdebstrap, chroot, file ownership), but NO loop devices and
# NO mounts of the image: the root filesystem is filled with `mkfs.ext4 -d`,
# the ESP with mtools, GRUB images come from grub-mkimage and the BIOS boot
# code is written into the image file directly (python block below).
#
# Usage: sudo image/build.sh
# Environment (all optional):
#   OUT=/tmp/tollgate-image/out    where tollgate.raw (+ .qcow2) land
#   WORK=/tmp/tollgate-image/work  scratch; removed on exit unless KEEP_WORK=1
#   GATEWAY_BIN=path           the release binary; default: cargo build --release
#   OVERLAY=dir                file tree copied over the rootfs (default: image/overlay)
#   IMAGE_SIZE=2G              raw image size (sparse); first boot grows root to the disk
#   EXTRA_PACKAGES=a,b         more Debian packages for the image
#   SUITE=bookworm MIRROR=http://deb.debian.org/debian
#   SECURITY_MIRROR=http://deb.debian.org/debian-security
#   KERNEL_CMDLINE="console=tty0 console=ttyS0,115200n8"
#   DEBUG_ROOT_PASSWORD=pw     set a root password (default: root locked)
#   QCOW2=1                    also write a compressed tollgate.qcow2 (needs qemu-img)
#   BUILD_TIMEOUT=1800         hard limit in seconds for the whole script
set -euo pipefail

: "${BUILD_TIMEOUT:=1800}"
if [[ -z "${_GW_BUILD_TIMED:-}" ]]; then
  export _GW_BUILD_TIMED=1
  exec timeout -k 30 "$BUILD_TIMEOUT" bash "$0" "$@"
fi

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
: "${WORK:=/tmp/tollgate-image/work}"
: "${OUT:=/tmp/tollgate-image/out}"
: "${OVERLAY:=$HERE/overlay}"
: "${SUITE:=bookworm}"
: "${MIRROR:=http://deb.debian.org/debian}"
: "${SECURITY_MIRROR:=http://deb.debian.org/debian-security}"
: "${IMAGE_SIZE:=2G}"
: "${KERNEL_CMDLINE:=console=tty0 console=ttyS0,115200n8}"
: "${QCOW2:=1}"
: "${KEEP_WORK:=0}"
ENABLE_UNITS="tollgate-firstboot.service tollgate.service tollgate-boot-report.service"
# netbase: /etc/protocols and /etc/services (nft cannot resolve "icmp" without it)
# (systemd's own systemd-creds seals the master key; no other tool needed)
PACKAGES="systemd-sysv,systemd-timesyncd,udev,dbus,netbase,nftables,iproute2,linux-image-amd64,zstd${EXTRA_PACKAGES:+,$EXTRA_PACKAGES}"

ROOT="$WORK/rootfs"
T0=$(date +%s)
log() { printf '[build %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

[[ $(id -u) == 0 ]] || { echo "build.sh must run as root" >&2; exit 2; }

cleanup() {
  local rc=$?
  # mmdebstrap (root mode) mounts proc/sys/dev inside the target; if it was
  # killed they are still there. Unmount before any rm -rf.
  if [[ -d "$WORK" ]]; then
    awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r |
      while read -r m; do umount -l "$m" || true; done
    if [[ "$KEEP_WORK" != 1 ]]; then rm -rf --one-file-system "$WORK"; fi
  fi
  if [[ $rc != 0 ]]; then log "FAILED (rc=$rc)"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# ---------------------------------------------------------------- host tools
need_pkgs=()
for pair in mmdebstrap:mmdebstrap sfdisk:fdisk mkfs.vfat:dosfstools mcopy:mtools \
            mkfs.ext4:e2fsprogs grub-mkimage:grub-common objdump:binutils qemu-img:qemu-utils; do
  command -v "${pair%%:*}" >/dev/null || need_pkgs+=("${pair#*:}")
done
[[ -d /usr/lib/grub/i386-pc ]] || need_pkgs+=(grub-pc-bin)
[[ -d /usr/lib/grub/x86_64-efi ]] || need_pkgs+=(grub-efi-amd64-bin)
if ((${#need_pkgs[@]})); then
  log "installing host packages: ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${need_pkgs[@]}" >/dev/null
fi

rm -rf --one-file-system "$WORK"
mkdir -p "$WORK" "$OUT"

# ---------------------------------------------------------------- gateway binary
if [[ -z "${GATEWAY_BIN:-}" ]]; then
  log "building the release binary"
  (cd "$REPO" && cargo build --release --locked --bin tollgate </dev/null)
  GATEWAY_BIN="$REPO/target/release/tollgate"
fi
[[ -x "$GATEWAY_BIN" ]] || { echo "GATEWAY_BIN=$GATEWAY_BIN is not an executable" >&2; exit 2; }
# The image's glibc is bookworm's 2.36: a binary needing newer would not run.
glibc_need=$(objdump -T "$GATEWAY_BIN" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1 || true)
log "binary needs ${glibc_need:-an unknown glibc} (the image has GLIBC_2.36)"
if [[ -n "$glibc_need" ]] && [[ "$(printf '%s\nGLIBC_2.36\n' "$glibc_need" | sort -V | tail -1)" != GLIBC_2.36 ]]; then
  echo "the binary needs $glibc_need, newer than the image's 2.36" >&2; exit 2
fi
strip -o "$WORK/tollgate" "$GATEWAY_BIN"

# ---------------------------------------------------------------- rootfs
# mmdebstrap (apt-based debootstrap successor): several sources at once, so the
# image gets bookworm-updates and bookworm-security, and man pages / docs are
# never unpacked (copyright files are kept).
log "mmdebstrap $SUITE (minbase + $PACKAGES)"
mmdebstrap --variant=minbase --include="$PACKAGES" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  "$SUITE" "$ROOT" \
  "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main" \
  > "$WORK/mmdebstrap.log" 2>&1 || { tail -40 "$WORK/mmdebstrap.log"; exit 1; }

KVER=$(basename "$(ls -d "$ROOT"/lib/modules/* | sort -V | tail -1)")
[[ -f "$ROOT/boot/vmlinuz-$KVER" && -f "$ROOT/boot/initrd.img-$KVER" ]] ||
  { echo "kernel or initrd missing for $KVER" >&2; exit 1; }
ROOT_UUID=$(cat /proc/sys/kernel/random/uuid)
log "configuring rootfs (kernel $KVER, root UUID $ROOT_UUID)"

echo tollgate > "$ROOT/etc/hostname"
cat > "$ROOT/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	tollgate
::1		localhost ip6-localhost ip6-loopback
EOF
cat > "$ROOT/etc/fstab" <<EOF
UUID=$ROOT_UUID  /  ext4  rw,errors=remount-ro,x-systemd.growfs  0 1
EOF
# Every installed copy must get its own machine-id (DHCP DUID, journal...):
# an empty file makes systemd generate one on first boot.
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"

cp -a "$OVERLAY/." "$ROOT/"
install -m 0755 "$WORK/tollgate" "$ROOT/usr/bin/tollgate"
install -d "$ROOT/usr/lib/tollgate" "$ROOT/usr/share/tollgate/rulesets" "$ROOT/usr/share/tollgate/monitoring" \
  "$ROOT/usr/share/doc/tollgate"
install -m 0644 "$REPO"/systemd/*.service "$HERE"/units/*.service "$ROOT/usr/lib/systemd/system/"
install -m 0644 "$REPO/systemd/sysusers.d/tollgate.conf" "$ROOT/usr/lib/sysusers.d/tollgate.conf"
install -m 0644 "$REPO/systemd/tmpfiles.d/tollgate.conf" "$ROOT/usr/lib/tmpfiles.d/tollgate.conf"
install -D -m 0644 "$REPO/systemd/sysctl.d/60-tollgate.conf" "$ROOT/usr/lib/sysctl.d/60-tollgate.conf"
install -m 0755 "$REPO/systemd/firstboot" "$HERE/units/boot-report" "$ROOT/usr/lib/tollgate/"
install -m 0644 "$REPO"/rulesets/*.nft "$REPO"/rulesets/*.toml "$ROOT/usr/share/tollgate/rulesets/"
install -m 0644 "$HERE"/monitoring/*.yml "$HERE"/monitoring/*.json "$ROOT/usr/share/tollgate/monitoring/"
install -m 0644 "$REPO/README.md" "$ROOT/usr/share/doc/tollgate/README.md"
# The service user and the operators' groups exist from the start (the
# first boot's chgrp needs them; sysusers at boot finds them made).
systemd-sysusers --root="$ROOT" >/dev/null 2>&1
# The configuration names the carriers' networks and may hold a
# registration password: root writes it, the service's group reads it.
TOLLGATE_GID=$(awk -F: '$1 == "tollgate" { print $3 }' "$ROOT/etc/group")
[ -n "$TOLLGATE_GID" ] || { echo "build.sh: sysusers made no group tollgate" >&2; exit 1; }
chown "0:$TOLLGATE_GID" "$ROOT/etc/tollgate/tollgate.toml"
chmod 0640 "$ROOT/etc/tollgate/tollgate.toml"
# Valid, and safe to ship (--strict: no test number open to all, no SDES
# in clear, no secret others can read, /metrics only to admin networks).
"$ROOT/usr/bin/tollgate" config check --strict "$ROOT/etc/tollgate/tollgate.toml" >/dev/null 2>"$WORK/config.err" ||
  grep -q "has no address now" "$WORK/config.err" || { cat "$WORK/config.err" >&2; exit 1; }

# Time synchronisation: records, retention, TLS and TOTP all trust the
# clock (servers from DHCP, else Debian's pool; see timesyncd.conf.d).
systemctl --quiet --root="$ROOT" enable systemd-networkd.service systemd-timesyncd.service nftables.service $ENABLE_UNITS
systemctl --quiet --root="$ROOT" set-default multi-user.target
# First boot (empty machine-id) would otherwise start the interactive
# systemd-firstboot wizard on the console and wait forever for input.
# apt timers would try to reach the network from the appliance.
systemctl --quiet --root="$ROOT" mask systemd-firstboot.service apt-daily.timer \
  apt-daily-upgrade.timer

# Check the firewall ruleset now rather than at boot (needs nf_tables in the
# host kernel; a private network namespace keeps the host's rules untouched).
if unshare -n true 2>/dev/null && unshare -n chroot "$ROOT" nft -c -f /etc/nftables.conf 2>"$WORK/nft.err"; then
  log "nftables.conf: syntax OK"
elif grep -q "Error:" "$WORK/nft.err"; then
  cat "$WORK/nft.err" >&2; exit 1
else
  log "WARNING: could not check nftables.conf here: $(head -1 "$WORK/nft.err")"
fi

if [[ -n "${DEBUG_ROOT_PASSWORD:-}" ]]; then
  usermod --root "$ROOT" -p "$(openssl passwd -6 "$DEBUG_ROOT_PASSWORD")" root
fi

# Slim down: package lists and caches, logs.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/cache/apt/*.bin \
       "$ROOT"/var/lib/apt/lists/* "$ROOT"/tmp/*
find "$ROOT/var/log" -type f -delete

# ---------------------------------------------------------------- GRUB (one config for BIOS and UEFI)
mkdir -p "$ROOT/boot/grub"
cp -r /usr/lib/grub/i386-pc /usr/lib/grub/x86_64-efi "$ROOT/boot/grub/"
cat > "$ROOT/boot/grub/grub.cfg" <<EOF
set timeout=1
if serial --unit=0 --speed=115200; then
  terminal_input --append serial
  terminal_output --append serial
fi
search --no-floppy --fs-uuid --set=root $ROOT_UUID
menuentry "Tollgate ($KVER)" {
  linux /boot/vmlinuz-$KVER root=UUID=$ROOT_UUID ro $KERNEL_CMDLINE
  initrd /boot/initrd.img-$KVER
}
EOF
cat > "$WORK/early.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $ROOT_UUID
set prefix=(\$root)/boot/grub
EOF
GRUB_MODS="part_gpt ext2 search search_fs_uuid normal configfile linux echo test serial terminal"
grub-mkimage -O x86_64-efi -d /usr/lib/grub/x86_64-efi -p /boot/grub -c "$WORK/early.cfg" \
  -o "$WORK/BOOTX64.EFI" $GRUB_MODS fat all_video
grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc -p /boot/grub -c "$WORK/early.cfg" \
  -o "$WORK/core.img" biosdisk $GRUB_MODS

# ---------------------------------------------------------------- disk assembly
# GPT: 1 MiB BIOS boot (GRUB core.img) | 128 MiB ESP | root (rest)
BIOS_START=2048 BIOS_SECTORS=2048
ESP_START=4096  ESP_SECTORS=262144
ROOT_START=266240
IMG="$WORK/disk.raw"
truncate -s "$IMAGE_SIZE" "$IMG"
sfdisk -q "$IMG" <<EOF
label: gpt
unit: sectors
first-lba: 2048
start=$BIOS_START, size=$BIOS_SECTORS, type=21686148-6449-6E6F-744E-656564454649, name="bios-boot"
start=$ESP_START, size=$ESP_SECTORS, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp"
start=$ROOT_START, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"
EOF
ROOT_SECTORS=$(sfdisk --json "$IMG" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][2]["size"])')

log "ESP (FAT32 via mtools, no mount)"
truncate -s $((ESP_SECTORS * 512)) "$WORK/esp.img"
mkfs.vfat -F 32 -n ESP "$WORK/esp.img" >/dev/null
MTOOLS_SKIP_CHECK=1 mmd -i "$WORK/esp.img" ::/EFI ::/EFI/BOOT
MTOOLS_SKIP_CHECK=1 mcopy -i "$WORK/esp.img" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
dd if="$WORK/esp.img" of="$IMG" bs=512 seek=$ESP_START conv=notrunc,sparse status=none
rm -f "$WORK/esp.img"

log "root ext4 ($((ROOT_SECTORS / 2048)) MiB) via mkfs.ext4 -d, no mount"
truncate -s $((ROOT_SECTORS * 512)) "$WORK/root.img"
mkfs.ext4 -q -F -L gw-root -U "$ROOT_UUID" -d "$ROOT" "$WORK/root.img" "$((ROOT_SECTORS / 2))k" 2>/dev/null
e2fsck -fn "$WORK/root.img" >/dev/null 2>&1 || { e2fsck -fn "$WORK/root.img"; exit 1; }
dd if="$WORK/root.img" of="$IMG" bs=1M seek=$((ROOT_START * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
rm -f "$WORK/root.img"

log "BIOS boot code (boot.img in MBR, core.img in the BIOS boot partition)"
# What grub-bios-setup does for a GPT disk with a BIOS boot partition
# (util/setup.c, embedding path, without Reed-Solomon codes). grub-bios-setup
# itself refuses an image file (it guesses a root device from a mounted
# /boot/grub), and on this machine kind grub-install / grub-bios-setup on a
# loop device fail too ("cannot find a GRUB drive for /dev/loop0p3").
python3 - "$IMG" /usr/lib/grub/i386-pc/boot.img "$WORK/core.img" "$BIOS_START" "$BIOS_SECTORS" <<'PY'
import struct, sys
img, boot_path, core_path, start, nsect = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
boot = bytearray(open(boot_path, "rb").read()); core = bytearray(open(core_path, "rb").read())
assert len(boot) == 512
nsec = (len(core) + 511) // 512
assert nsec <= nsect, "core.img larger than the BIOS boot partition"
core += b"\0" * (nsec * 512 - len(core))
with open(img, "r+b") as f:
    mbr = f.read(512)
    boot[0x03:0x5a] = mbr[0x03:0x5a]            # keep (empty) BPB
    boot[0x1b8:0x1fe] = mbr[0x1b8:0x1fe]        # keep disk signature + protective MBR table
    boot[0x5c:0x64] = struct.pack("<Q", start)  # KERNEL_SECTOR: first sector of core.img
    boot[0x64] = 0xFF                           # BOOT_DRIVE: use the drive the BIOS booted
    boot[0x66:0x68] = b"\x90\x90"               # DRIVE_CHECK workaround for buggy BIOSes
    # diskboot blocklist at the end of core.img's first sector: rest of core.img
    core[0x1f4:0x200] = struct.pack("<QHH", start + 1, nsec - 1, 0x820)
    core[0x1e8:0x1f4] = b"\0" * 12                # terminator
    f.seek(start * 512); f.write(core)
    f.seek(0); f.write(boot)
PY

sfdisk --verify "$IMG" >/dev/null
mv "$IMG" "$OUT/tollgate.raw"
if [[ "$QCOW2" == 1 ]] && command -v qemu-img >/dev/null; then
  qemu-img convert -c -O qcow2 "$OUT/tollgate.raw" "$OUT/tollgate.qcow2"
fi
cat > "$OUT/image-info.txt" <<EOF
suite=$SUITE kernel=$KVER root_uuid=$ROOT_UUID
cmdline=root=UUID=$ROOT_UUID ro $KERNEL_CMDLINE
EOF
log "done: $(ls -sh "$OUT"/tollgate.* | tr '\n' ' ')"
du -h --apparent-size "$OUT"/tollgate.raw | sed 's/^/  apparent: /'
