#!/usr/bin/env bash
# A short load run with real agents: AGENTS softphones (`tollgate agent
# connect`, each its own process) log in and auto-answer; sipp places as
# many concurrent calls with G.711 audio to the default queue; each agent
# records, sends its own audio (silence) and hangs up after SECONDS.
#
#   benches/agent_load.sh [AGENTS] [SECONDS]     (defaults 100, 8)
#
# Prints calls answered, the agents' loss, jitter and MOS (median and
# worst), and the gateway's CPU time per relayed packet (user+system from
# /proc over the packets it counted in and out, both legs).
set -euo pipefail
cd "$(dirname "$0")/.."
agents=${1:-100}
secs=${2:-8}
scripts/deps
cargo build --release --quiet
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    kill -TERM "$gw" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/tollgate.toml" <<TOML
[sip]
udp = ["127.0.0.1:16160"]
tcp = []
[media]
rtp_ports = "40000-49999"
[admin]
listen = "127.0.0.1:16161"
[agents]
listen = "127.0.0.1:16162"
[[trunk]]
name = "load"
peers = ["127.0.0.0/8"]
codecs = ["PCMA"]
srtp = "off"
[[route]]
number = "*"
target = "queue:default"
[firewall]
nftables = "off"
TOML
tg=target/release/tollgate
head -c 32 /dev/urandom > "$work/master.key"
RUST_LOG=warn $tg run --config "$work/tollgate.toml" --data-dir "$work/data" \
    --master-key "$work/master.key" >"$work/gateway.log" 2>&1 &
gw=$!
for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:16161/healthz >/dev/null 2>&1 && break
    sleep 0.1
done
metric() { curl -s http://127.0.0.1:16161/metrics | awk -v m="$1" '$1 == m { print $2 }'; }
for i in $(seq 1 "$agents"); do
    $tg agent enroll "a$i" --out "$work/a$i.toml" --config "$work/tollgate.toml" \
        --data-dir "$work/data" --master-key "$work/master.key" 2>/dev/null > "$work/a$i.otp"
done
for i in $(seq 1 "$agents"); do
    $tg agent connect --identity "$work/a$i.toml" --otp-secret-file "$work/a$i.otp" \
        --auto-answer --duration "$secs" >"$work/a$i.out" 2>"$work/a$i.err" &
    pids+=($!)
done
for _ in $(seq 1 300); do
    [ "$(metric tollgate_agents_available)" = "$agents" ] && break
    sleep 0.1
done
echo "agents available: $(metric tollgate_agents_available)"
cpu0=$(awk '{print $14 + $15}' /proc/$gw/stat)
pk0=$(curl -s http://127.0.0.1:16161/metrics | awk '/^tollgate_rtp_packets_total/ { s += $2 } END { print s + 0 }')
(cd "$work" && sipp 127.0.0.1:16160 -sf "$OLDPWD/tests/sipp/uac_agent_pcap.xml" -s 441234567890 \
    -i 127.0.0.1 -p 16170 -mp 16200 -nostdin -key pcap /usr/share/sip-tester/g711a.pcap \
    -m "$agents" -l "$agents" -r "$agents" -timeout 120s -timeout_error) >"$work/sipp.out" 2>&1 || true
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()
cpu1=$(awk '{print $14 + $15}' /proc/$gw/stat)
pk1=$(curl -s http://127.0.0.1:16161/metrics | awk '/^tollgate_rtp_packets_total/ { s += $2 } END { print s + 0 }')
ok=$(grep -E '^ +Successful call' "$work/sipp.out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
cat "$work"/a*.out > "$work/reports"
python3 - "$ok" "$agents" "$cpu0" "$cpu1" "$pk0" "$pk1" "$(getconf CLK_TCK)" "$work/reports" <<'PY'
import re, statistics, sys
ok, agents, cpu0, cpu1, pk0, pk1, hz, path = sys.argv[1:]
lines = open(path).read().splitlines()
def col(name):
    return [float(m.group(1)) for l in lines for m in [re.search(name + r" ([0-9.]+)", l)] if m]
recv, lost, jit, mos = col("received"), col("lost"), col("jitter"), col("MOS")
loss = [l / (r + l) if r + l else 0 for r, l in zip(recv, lost)]
cpu = (float(cpu1) - float(cpu0)) / float(hz)
packets = float(pk1) - float(pk0)
print(f"sipp calls completed {ok or 0} of {agents}; agents reporting {len(lines)}")
if lines:
    print(f"agents' loss: median {statistics.median(loss):.4%}, worst {max(loss):.4%}")
    print(f"agents' jitter: median {statistics.median(jit):.2f} ms, worst {max(jit):.2f} ms")
    print(f"agents' MOS: median {statistics.median(mos):.2f}, worst {min(mos):.2f}")
if packets:
    print(f"gateway CPU {cpu:.2f} s for {packets:.0f} RTP packets counted (in+out, both legs): "
          f"{cpu / packets * 1e6:.2f} us per packet counted, {2 * cpu / packets * 1e6:.2f} us per relayed packet")
PY
