#!/usr/bin/env bash
# image/boot_test.sh - boot the appliance image under QEMU (software
# emulation), once with UEFI and once with legacy BIOS, as a network team
# would: the shipped configuration with one trunk added whose peer is the
# test (QEMU's user network shows the host as 10.0.2.2). A boot passes only
# if, through ports forwarded from loopback, /healthz answers and a SIP
# OPTIONS gets 200, and the console's boot report says tollgate.service is
# active, no unit failed, the nftables table inet tollgate is loaded, the
# master key was sealed by the machine and the root filesystem grew. Every
# boot starts from the pristine image: no two may share a machine-id, TLS
# certificate, agent CA or sealed master key (nothing baked in).
#
# Built from ../shared/reference/image/boot_test.sh.
#
# Usage: sudo image/boot_test.sh [IMAGE]   (default /tmp/tollgate-image/out/tollgate.raw)
# Environment (all optional):
#   FIRMWARE="uefi bios"   which firmware(s) to boot with (OVMF / SeaBIOS)
#   BOOTS=1                first boots per firmware (each from the pristine
#                          image); with more, the median boot-to-service
#                          time per firmware is printed
#   BOOT_TIMEOUT=300       seconds allowed per boot for the service to answer
#   DISK_SIZE=4G           virtual disk size the guest sees (> image: tests the
#                          first-boot growth of the root partition + filesystem)
#   LOG_DIR=/tmp/tollgate-image/boot-logs   serial logs are kept here
#   ACCEL=tcg              tcg (default) or kvm; /dev/kvm on this machine kind
#                          exists but cannot run guests (KVM internal error)
#   MEM=1024 SMP=2
#   TEST_TIMEOUT=1200      hard limit in seconds for the whole script
# The image itself is never written: each boot gets a qcow2 overlay.
# Exit status 0 only if every boot passed; last line: "N passed, M failed".
set -euo pipefail

: "${TEST_TIMEOUT:=1200}"   # hard limit for the whole script
if [[ -z "${_GW_TEST_TIMED:-}" ]]; then
  export _GW_TEST_TIMED=1
  exec timeout -k 30 "$TEST_TIMEOUT" bash "$0" "$@"
fi

IMAGE=${1:-/tmp/tollgate-image/out/tollgate.raw}
: "${FIRMWARE:=uefi bios}"
: "${BOOTS:=1}"
[[ $BOOTS =~ ^[1-9][0-9]?$ ]] || { echo "boot_test: BOOTS must be 1 to 99" >&2; exit 2; }
: "${BOOT_TIMEOUT:=300}"
: "${DISK_SIZE:=4G}"
: "${LOG_DIR:=/tmp/tollgate-image/boot-logs}"
: "${ACCEL:=tcg}"
: "${MEM:=1024}"
: "${SMP:=2}"
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd

[[ -f "$IMAGE" ]] || { echo "no image at $IMAGE (run build.sh first)" >&2; exit 2; }

# ---------------------------------------------------------------- host tools
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "$@" >/dev/null
}
if ! command -v qemu-system-x86_64 >/dev/null || [[ ! -f $OVMF_CODE ]] || ! command -v curl >/dev/null ||
   ! command -v debugfs >/dev/null; then
  apt-get update -qq
  apt_install e2fsprogs
  if ! apt_install qemu-system-x86 ovmf curl qemu-utils 2>/dev/null; then
    # This machine kind ships qemu-utils from bookworm-backports, which
    # Breaks bookworm's qemu-system-common: take qemu-system from backports.
    echo "boot_test: bookworm qemu-system-x86 conflicts with installed qemu-utils; using bookworm-backports" >&2
    cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -qq
    apt_install -t bookworm-backports qemu-system-x86
    apt_install ovmf curl
  fi
fi

mkdir -p "$LOG_DIR"
TMP=$(mktemp -d /tmp/tollgate-boot.XXXXXX)
QEMU_PID=
cleanup() {
  local rc=$?
  if [[ -n "$QEMU_PID" ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill "$QEMU_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5; do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 1; done
    kill -9 "$QEMU_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 143' TERM INT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
clean_log() { sed -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\r//g' "$1"; }

case "$IMAGE" in *.qcow2) echo "boot_test: give the raw image (the test edits a copy's config)" >&2; exit 2 ;; esac
IMG_FMT=raw

# ---------------------------------------------------------------- the test's trunk
# What a network team does after writing the image: add their carrier's
# network to a trunk in /etc/tollgate/tollgate.toml. Here the carrier is
# this host, which QEMU's user network shows the guest as 10.0.2.2. The
# edit goes into a sparse copy with debugfs (no mount, no loop device).
TEST_IMAGE="$TMP/tollgate-test.raw"
cp --sparse=always "$IMAGE" "$TEST_IMAGE"
read -r ROOT_START ROOT_SECTORS < <(sfdisk --json "$TEST_IMAGE" | python3 -c '
import json, sys
parts = json.load(sys.stdin)["partitiontable"]["partitions"]
root = [p for p in parts if p["type"].upper() == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"][0]
print(root["start"], root["size"])')
dd if="$TEST_IMAGE" of="$TMP/root.img" bs=512 skip="$ROOT_START" count="$ROOT_SECTORS" conv=sparse status=none
debugfs -R "cat /etc/tollgate/tollgate.toml" "$TMP/root.img" 2>/dev/null > "$TMP/tollgate.toml"
grep -q '^peers = \["192.0.2.0/24"\]' "$TMP/tollgate.toml" ||
  { echo "boot_test: the shipped config has no carrier trunk to add a peer to" >&2; exit 1; }
sed -i 's|^peers = \["192.0.2.0/24"\]|peers = ["192.0.2.0/24", "10.0.2.2/32"]|' "$TMP/tollgate.toml"
debugfs -w -R "rm /etc/tollgate/tollgate.toml" "$TMP/root.img" >/dev/null 2>&1
debugfs -w -R "write $TMP/tollgate.toml /etc/tollgate/tollgate.toml" "$TMP/root.img" >/dev/null 2>&1
# As the image ships it: root's, readable by the service's group only.
TOLLGATE_GID=$(debugfs -R "cat /etc/group" "$TMP/root.img" 2>/dev/null | awk -F: '$1 == "tollgate" { print $3 }')
[ -n "$TOLLGATE_GID" ] || { echo "boot_test: the image has no group tollgate" >&2; exit 1; }
debugfs -w -R "sif /etc/tollgate/tollgate.toml mode 0100640" "$TMP/root.img" >/dev/null 2>&1
debugfs -w -R "sif /etc/tollgate/tollgate.toml uid 0" "$TMP/root.img" >/dev/null 2>&1
debugfs -w -R "sif /etc/tollgate/tollgate.toml gid $TOLLGATE_GID" "$TMP/root.img" >/dev/null 2>&1
debugfs -R "cat /etc/tollgate/tollgate.toml" "$TMP/root.img" 2>/dev/null | grep -q '10.0.2.2/32' ||
  { echo "boot_test: could not write the test config into the image copy" >&2; exit 1; }
dd if="$TMP/root.img" of="$TEST_IMAGE" bs=512 seek="$ROOT_START" conv=notrunc,sparse status=none
rm -f "$TMP/root.img"
IMAGE="$TEST_IMAGE"

# A SIP OPTIONS to 127.0.0.1:$1 over TCP; prints the status line of the
# answer. (TCP: QEMU's user network does not bring UDP answers back to a
# forwarded port's sender, so UDP is checked by the call tests instead.)
sip_options() {
  python3 - "$1" <<'PY'
import random, socket, sys
port = int(sys.argv[1])
tag = random.randrange(1 << 30)
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    me = s.getsockname()[1]
    msg = (f"OPTIONS sip:tollgate@10.0.2.15 SIP/2.0\r\n"
           f"Via: SIP/2.0/TCP 127.0.0.1:{me};branch=z9hG4bK{tag}\r\n"
           f"Max-Forwards: 70\r\n"
           f"From: <sip:boot-test@10.0.2.2>;tag={tag}\r\n"
           f"To: <sip:tollgate@10.0.2.15>\r\n"
           f"Call-ID: boot-test-{tag}\r\n"
           f"CSeq: 1 OPTIONS\r\n"
           f"Content-Length: 0\r\n\r\n")
    s.sendall(msg.encode())
    print(s.recv(65535).decode(errors="replace").split("\r\n")[0])
except OSError:
    pass
PY
}
# Size of the root partition in the image (GPT type "Linux root x86-64"),
# to tell whether first boot grew it.
image_root_kb=0
if [[ $IMG_FMT == raw ]]; then
  image_root_kb=$(sfdisk --json "$IMAGE" | python3 -c '
import json, sys
parts = json.load(sys.stdin)["partitiontable"]["partitions"]
print(sum(p["size"] // 2 for p in parts if p["type"].upper() == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"))')
fi
passed=0 failed=0
declare -A TIMES=()
IDENTITIES=()

boot_one() {
  local fw=$1
  local serial="$LOG_DIR/serial-$fw.log" overlay="$TMP/$fw.qcow2" port sip_port
  port=$(free_port)
  sip_port=$(free_port)
  rm -f "$serial"
  qemu-img create -q -f qcow2 -F "$IMG_FMT" -b "$(realpath "$IMAGE")" "$overlay" "$DISK_SIZE"
  local fwargs=()
  if [[ $fw == uefi ]]; then
    cp "$OVMF_VARS" "$TMP/vars.fd"
    fwargs=(-drive "if=pflash,format=raw,readonly=on,file=$OVMF_CODE"
            -drive "if=pflash,format=raw,file=$TMP/vars.fd")
  fi
  local t0; t0=$(now)
  # restrict=on: the guest reaches nothing outside QEMU; hostfwd (TCP) still works.
  qemu-system-x86_64 -machine q35 -accel "$ACCEL" -m "$MEM" -smp "$SMP" \
    -display none -monitor none -no-reboot -serial "file:$serial" "${fwargs[@]}" \
    -drive "file=$overlay,format=qcow2,if=virtio" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:9100,hostfwd=tcp:127.0.0.1:$sip_port-:5060" \
    -device virtio-net-pci,netdev=n0 >"$TMP/qemu.out" 2>&1 &
  QEMU_PID=$!

  local up="" reply="" deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
  while (( $(date +%s) < deadline )); do
    if ! kill -0 "$QEMU_PID" 2>/dev/null; then echo "[$fw] qemu exited early:"; cat "$TMP/qemu.out"; break; fi
    reply=$(curl -s -m 3 "http://127.0.0.1:$port/healthz" 2>/dev/null || true)
    # "starting" until every listener is bound, then "ok".
    if [[ $reply == ok* ]]; then up=$(secs "$t0" "$(now)"); TIMES[$fw]+="$up "; break; fi
    sleep 1
  done

  local ok=1 msg=()
  if [[ -n $up ]]; then msg+=("/healthz answered after ${up}s: ${reply//$'\n'/ }"); else ok=0; msg+=("/healthz did NOT answer within ${BOOT_TIMEOUT}s"); fi
  local sip=""
  if [[ -n $up ]]; then
    for _ in $(seq 1 10); do sip=$(sip_options "$sip_port"); [[ -n $sip ]] && break; done
  fi
  if [[ $sip == "SIP/2.0 200"* ]]; then msg+=("OPTIONS: $sip"); else
    ok=0; msg+=("OPTIONS got '${sip:-no answer}'")
    # What the gateway saw of it.
    curl -s -m 3 "http://127.0.0.1:$port/metrics" 2>/dev/null |
      grep -E '^tollgate_(sip_requests|sip_responses|ids_verdicts|firewall_dropped|sip_transport)' | grep -v ' 0$' | sed "s/^/[$fw] /" || true
  fi
  # The boot report follows the gateway: give it time to settle.
  [[ -n $up ]] && for _ in $(seq 1 90); do clean_log "$serial" | grep -aq "BOOTCHECK failed_units=" && break; sleep 1; done
  local log; log=$(clean_log "$serial" | tr -d '\000')
  if grep -aq "BOOTCHECK tollgate=active" <<<"$log"; then msg+=("tollgate.service active"); else ok=0; msg+=("tollgate.service NOT active"); fi
  if grep -aq "BOOTCHECK nft_tables=.*table inet tollgate" <<<"$log"; then msg+=("table inet tollgate loaded"); else ok=0; msg+=("table inet tollgate NOT loaded"); fi
  if grep -aq "BOOTCHECK timesync=active ntp=yes" <<<"$log"; then msg+=("time synchronisation on"); else ok=0; msg+=("time synchronisation NOT on: $(grep -ao 'BOOTCHECK timesync=[a-z]* ntp=[a-z]*' <<<"$log" | tail -1)"); fi
  if grep -aq "BOOTCHECK master_key=sealed" <<<"$log"; then msg+=("master key sealed by the machine"); else ok=0; msg+=("master key NOT sealed: $(grep -ao 'BOOTCHECK master_key=[a-z]*' <<<"$log" | tail -1)"); fi
  local identity; identity=$(grep -ao "BOOTCHECK identity=[^ ]*" <<<"$log" | tail -1 | cut -d= -f2 || true)
  if [[ -n $identity && $identity != *none* ]]; then msg+=("made its own identity"); IDENTITIES+=("$identity")
  else ok=0; msg+=("identity incomplete: ${identity:-no report}"); fi
  # systemd/sysctl.d/60-tollgate.conf: room for the agents' media bursts.
  if grep -aq "BOOTCHECK rmem_max=16777216" <<<"$log"; then msg+=("socket buffers raised"); else ok=0; msg+=("socket buffers NOT raised: $(grep -ao 'BOOTCHECK rmem_max=[0-9]*' <<<"$log" | tail -1)"); fi
  local failed_units; failed_units=$(grep -ao "BOOTCHECK failed_units=[0-9]*.*" <<<"$log" | tail -1 | cut -d= -f2 || true)
  if [[ ${failed_units:-x} == 0* ]]; then msg+=("no failed units"); else ok=0; msg+=("failed units: ${failed_units:-unknown}"); fi
  local root_kb; root_kb=$(grep -ao "BOOTCHECK root_kb=[0-9]*" <<<"$log" | tail -1 | cut -d= -f2 || true)
  if [[ -n $root_kb && $image_root_kb -gt 0 ]]; then
    msg+=("root fs $((root_kb / 1024)) MiB (image partition $((image_root_kb / 1024)) MiB)")
    if (( $(numfmt --from=iec "$DISK_SIZE") > $(stat -c %s "$IMAGE") + 268435456 )) && (( root_kb < image_root_kb + 131072 )); then
      ok=0; msg+=("root was NOT grown to the disk")
    fi
  fi

  kill "$QEMU_PID" 2>/dev/null || true; wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=
  rm -f "$overlay"
  if (( ok )); then passed=$((passed + 1)); echo "PASS [$fw] $(IFS=';'; echo "${msg[*]}")"
  else
    failed=$((failed + 1)); echo "FAIL [$fw] $(IFS=';'; echo "${msg[*]}")"
    echo "----- last 40 lines of $serial -----"; tail -40 <<<"$log"; echo "-----"
  fi
}

for fw in $FIRMWARE; do
  for _ in $(seq 1 "$BOOTS"); do boot_one "$fw"; done
  if (( BOOTS > 1 )) && [[ -n ${TIMES[$fw]:-} ]]; then
    # QEMU's start to /healthz "ok", first boots, TCG.
    python3 - "$fw" ${TIMES[$fw]} <<'PY'
import statistics, sys
fw, t = sys.argv[1], sorted(float(x) for x in sys.argv[2:])
print(f"boot_test: [{fw}] boot to service: median {statistics.median(t):.1f} s over {len(t)} boots "
      f"(min {t[0]:.1f}, max {t[-1]:.1f}): {' '.join(f'{x:.1f}' for x in t)}")
PY
  fi
done
# Nothing the first boot makes may repeat between boots of one image.
if (( ${#IDENTITIES[@]} > 1 )); then
  if ! python3 - "${IDENTITIES[@]}" <<'PY'
import sys
seen = {}
for boot, ident in enumerate(sys.argv[1:]):
    for part in ident.split(","):
        kind, _, h = part.partition(":")
        if (kind, h) in seen:
            print(f"boot_test: boots {seen[(kind, h)] + 1} and {boot + 1} share a {kind}: baked into the image")
            sys.exit(1)
        seen[(kind, h)] = boot
print(f"boot_test: {len(sys.argv) - 1} boots, each with its own machine-id, TLS certificate, agent CA and master key")
PY
  then failed=$((failed + 1)); fi
fi
echo "boot_test: $passed passed, $failed failed"
(( failed == 0 ))
