#!/usr/bin/env bash
# Tollgate against rtpengine on the same trunk traffic, in one run.
#
#   benches/vs_rtpengine.sh [CALLS...]        (default: 100 1000 2500)
#
# For each size: `tollgate loadgen` starts a gateway pinned to CPU 0, logs
# in one agent per call over its own QUIC connection, places the calls over
# SIP and relays checked G.711 both ways (trunk RTP, agents' SRTP
# AEAD_AES_128_GCM in QUIC datagrams); then the same carrier pump runs
# through Debian's rtpengine (userspace, --table=-1, pinned to CPU 0,
# driven over its ng protocol on loopback) with the agents' side as SDES
# SRTP AEAD_AES_128_GCM endpoints. The load generator runs on CPU 1.
# Prints, per size and relay: CPU per relayed packet (user + system, every
# thread), loss, p99 one-way latency, and Tollgate's cost over rtpengine's.
# Then the kernel's floor for the same packets (`benches/udp_floor.rs`: a
# relay with the gateway's sockets and nothing else, same CPUs), and what
# each relay spends above it.
#
# Environment: SECONDS_MEASURED (default 10), GATEWAY_CPU (0), LOAD_CPU (1).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1000 2500)
secs=${SECONDS_MEASURED:-10}
gcpu=${GATEWAY_CPU:-0}
lcpu=${LOAD_CPU:-1}

if ! command -v rtpengine >/dev/null; then
    echo "installing Debian's rtpengine-daemon"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends rtpengine-daemon </dev/null
    # The package's own service (where systemd runs) is not ours to keep.
    [ -d /run/systemd/system ] && $sudo systemctl disable --now rtpengine-daemon.service </dev/null || true
fi
cargo build --release --quiet
cargo bench --quiet --no-run --bench udp_floor
tg=target/release/tollgate
# A thousand calls hold thousands of sockets (gateway: RTP and RTCP per
# call; load generator: one QUIC endpoint per agent).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
work=$(mktemp -d)
rtpe=""
cleanup() {
    [ -n "$rtpe" ] && kill "$rtpe" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A free UDP port on loopback for rtpengine's ng listener.
ng_port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# A value from a loadgen JSON report: field FILE a.b.c
field() {
    python3 -c 'import json, sys, functools
print(functools.reduce(lambda v, k: v[k], sys.argv[2].split("."), json.load(open(sys.argv[1]))))' "$1" "$2"
}

row() { # name json
    printf '%-9s %6s %10.2f %10.4f %10.4f %10s %10s\n' "$1" "$(field "$2" calls)" \
        "$(field "$2" gateway_cpu_us_per_packet)" \
        "$(python3 -c "print($(field "$2" to_agents.loss) * 100)")" \
        "$(python3 -c "print($(field "$2" to_trunk.loss) * 100)")" \
        "$(field "$2" to_agents.latency.p99_us)" "$(field "$2" to_trunk.latency.p99_us)"
}

results=()
for n in "${sizes[@]}"; do
    echo "== $n calls: Tollgate" >&2
    taskset -c "$lcpu" $tg loadgen --calls "$n" --seconds "$secs" --rate 200 \
        --gateway-cpus "$gcpu" --json >"$work/tollgate-$n.json"
    echo "== $n calls: rtpengine" >&2
    taskset -c "$gcpu" rtpengine --table=-1 --interface=127.0.0.1 \
        --listen-ng="127.0.0.1:$ng_port" --port-min=20000 --port-max=59999 \
        --foreground --log-stderr --log-level=3 --num-threads=1 >"$work/rtpengine-$n.log" 2>&1 &
    rtpe=$!
    for _ in $(seq 1 50); do
        ss -uln | grep -q "127.0.0.1:$ng_port " && break
        sleep 0.1
    done
    taskset -c "$lcpu" $tg loadgen --calls "$n" --seconds "$secs" --rate 200 \
        --rtpengine "127.0.0.1:$ng_port" --pid "$rtpe" --json >"$work/rtpengine-$n.json"
    kill "$rtpe"
    wait "$rtpe" 2>/dev/null || true
    rtpe=""
    echo "== $n calls: the sockets' floor" >&2
    # Three rounds, the median taken: a single run is inside this VM's
    # noise. A failed floor run is reported, not fatal to the table.
    cargo bench --quiet --bench udp_floor -- --calls "$n" --seconds "$secs" --rounds 3 \
        --mode epoll --relay-cpu "$gcpu" --pump-cpu "$lcpu" >"$work/floor-$n.txt" 2>&1 ||
        echo "udp_floor failed: $(tail -1 "$work/floor-$n.txt")" >&2
    results+=("$n")
done

echo
echo "CPU per relayed packet (us, gateway pinned to CPU $gcpu, ${secs} s measured); loss (%); p99 one-way latency (us)"
printf '%-9s %6s %10s %10s %10s %10s %10s\n' relay calls us/packet "loss->ag" "loss->tr" "p99->ag" "p99->tr"
for n in "${results[@]}"; do
    row tollgate "$work/tollgate-$n.json"
    row rtpengine "$work/rtpengine-$n.json"
    python3 -c "
t = $(field "$work/tollgate-$n.json" gateway_cpu_us_per_packet)
r = $(field "$work/rtpengine-$n.json" gateway_cpu_us_per_packet)
import re
text = open('$work/floor-$n.txt').read()
m = re.search(r'median Epoll: ([0-9.]+) us', text)
losses = [float(x) for x in re.findall(r'lost \\d+ \\(([0-9.]+)%\\)', text)]
f = float(m.group(1)) if m else 0.0
if m:
    # The floor's loss is both directions together, the worst round.
    print('%-9s %6s %10.2f %10.4f %10s' % ('floor', '$n', f, max(losses or [0.0]), '(both)'))
else:
    print('%-9s %6s %10s' % ('floor', '$n', 'n/a'))
print('%-9s %6s %10s' % ('ratio', '$n', ('%.2f' % (t / r)) if r > 0 else 'n/a'))
if f > 0:
    print('%-9s %6s   over the floor: Tollgate %.2f us, rtpengine %.2f us' % ('above', '$n', t - f, r - f))
"
done
