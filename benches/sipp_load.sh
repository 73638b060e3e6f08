#!/usr/bin/env bash
# Call setups per second: sipp's built-in UAC places short calls (INVITE,
# 200 with SDP, ACK, BYE at once) to the echo number of a release build,
# as fast as the gateway completes them, with at most LIMIT calls open.
#
#   benches/sipp_load.sh [CALLS] [LIMIT]     (defaults 20000, 200)
#
# Prints calls completed, failed, wall time and calls per second.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-20000}
limit=${2:-200}
scripts/deps
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill -TERM $gw 2>/dev/null || true; wait $gw 2>/dev/null || true; rm -rf "$work"' EXIT
# The load trunk is a carrier sending thousands of calls a second: its IDS
# limit is raised so the run measures the gateway, IDS included, not the
# carrier limit (50 x 20 INVITEs a second as shipped).
sed 's/^limit_factor = .*/limit_factor = 100000/' rulesets/ids.toml >"$work/ids.toml"
cat > "$work/tollgate.toml" <<TOML
[sip]
udp = ["127.0.0.1:16060"]
tcp = []
[media]
rtp_ports = "50000-59999"
[admin]
listen = "127.0.0.1:16061"
[[trunk]]
name = "load"
peers = ["127.0.0.0/8"]
codecs = ["PCMU"]
srtp = "off"
[[route]]
number = "echo"
target = "echo"
[firewall]
nftables = "off"
ids_rules = "$work/ids.toml"
TOML
RUST_LOG=warn target/release/tollgate run --config "$work/tollgate.toml" --data-dir "$work/data" \
    >"$work/gateway.log" 2>&1 &
gw=$!
for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:16061/healthz >/dev/null 2>&1 && break
    sleep 0.1
done
start=$(date +%s.%N)
(cd "$work" && sipp 127.0.0.1:16060 -sn uac -s echo -i 127.0.0.1 -p 16070 -nostdin \
    -m "$calls" -l "$limit" -r 100000 -d 0 -timeout 300s -timeout_error) >"$work/sipp.out" 2>&1 || true
end=$(date +%s.%N)
ok=$(grep -E '^ +Successful call' "$work/sipp.out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
failed=$(grep -E '^ +Failed call' "$work/sipp.out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
python3 - "$ok" "$failed" "$start" "$end" "$limit" <<'PY'
import sys
ok, failed, start, end, limit = int(sys.argv[1] or 0), int(sys.argv[2] or 0), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
wall = end - start
print(f"calls completed {ok}, failed {failed}, {wall:.1f} s, {ok / wall:.0f} call setups per second (at most {limit} open)")
PY
