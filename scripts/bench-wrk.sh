#!/usr/bin/env bash
# Webhook mints against the health ceiling, measured with wrk (an independent load generator, C and epoll) instead
# of `pkr bench`'s own: a check that the bench's generator does not bend the ratios. SQLite, the provider stub
# inside the server as in demo mode with its own file, pushes on; each run on a fresh database.
#
#   swift build -c release --product pkr && scripts/bench-wrk.sh [--customers 1000] [--runs 3] [--seconds 4]
#
# Needs wrk, python3 and curl (apt-get install wrk). Each run binds the customers through POST /api/users, pre-signs
# more distinct deposit webhooks than the window can send (Standard Webhooks, the demo secret), spread round-robin
# over the customers' accounts, then runs wrk for the health ceiling (GET /api/health) and for the mints, 64
# connections each. The deposits are not recorded at the provider stub first (the gateway does not ask it about a
# credit), so the run's database does not reconcile afterwards; it is thrown away.
set -euo pipefail
shopt -s inherit_errexit

customers=1000
runs=3
seconds=4
connections=64
binary=.build/release/pkr
while [ $# -gt 0 ]; do
  case "$1" in
    --customers) customers=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    *) echo "usage: $0 [--customers N] [--runs N] [--seconds N] [--binary PATH]" >&2; exit 2 ;;
  esac
done
for tool in wrk python3 curl; do
  command -v "$tool" > /dev/null || { echo "bench-wrk: $tool is not installed (apt-get install wrk python3 curl)" >&2; exit 1; }
done
# Every request is signed before the windows; the gateway accepts a signature for 300 s.
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -ge 1 ] && [ "$seconds" -le 30 ] ||
  { echo "bench-wrk: --seconds takes 1 to 30" >&2; exit 2; }
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "bench-wrk: --runs takes a positive number" >&2; exit 2; }
[[ "$customers" =~ ^[1-9][0-9]*$ ]] || { echo "bench-wrk: --customers takes a positive number" >&2; exit 2; }
[ -x "$binary" ] || { echo "bench-wrk: no $binary (swift build -c release --product pkr)" >&2; exit 1; }

work=$(mktemp -d /tmp/pkr-wrk.XXXXXX)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2> /dev/null || true; wait "$server_pid" 2> /dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/prepare.py" << 'EOF'
# Binds customers 2..N through POST /api/users, then writes `count` signed deposit webhooks, length-prefixed.
import base64, hashlib, hmac, http.client, json, os, sys, time
port, customers, count, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
token = "b" * 64
connection = http.client.HTTPConnection("127.0.0.1", port)
accounts = ["WALLET-001"]
for index in range(1, customers):
    account = "WALLET-WRK-%05d" % index
    body = json.dumps({"email": "wrk%05d@example.com" % index, "wallet_account": account})
    connection.request("POST", "/api/users", body, {"Content-Type": "application/json",
                       "Cookie": "csrftoken=" + token, "X-CSRFToken": token})
    response = connection.getresponse(); response.read()
    if response.status not in (200, 201):
        sys.exit("POST /api/users answered %d" % response.status)
    accounts.append(account)
secret = base64.b64decode("/XvKwvSyKGwMVfJ/Yt14xePVF64NrDvOFSOHd8hwkGM=")  # the demo secret (DevKeys)
now = int(time.time())
occurred = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
with open(out, "wb") as file:
    for index in range(count):
        millis = int(time.time() * 1000)
        tx = "TX-" + millis.to_bytes(6, "big").hex() + os.urandom(10).hex()
        body = json.dumps({"type": "wallet.credit", "provider_tx_id": tx, "account": accounts[index % len(accounts)],
                           "direction": "credit", "amount_pkr": "1.00", "status": "settled",
                           "occurred_at": occurred, "memo": "wrk"}, separators=(",", ":"))
        message = "msg_" + os.urandom(16).hex()
        signature = base64.b64encode(hmac.new(secret, ("%s.%d.%s" % (message, now, body)).encode(), hashlib.sha256).digest())
        request = ("POST /api/webhooks/wallet HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                   "webhook-id: %s\r\nwebhook-timestamp: %d\r\nwebhook-signature: v1,%s\r\nContent-Length: %d\r\n\r\n%s"
                   % (port, message, now, signature.decode(), len(body), body)).encode()
        file.write(len(request).to_bytes(4, "big") + request)
EOF

cat > "$work/replay.lua" << EOF
-- Sends each pre-signed request once, in order; reports how many it had, so a window that ran out shows.
local requests = {}
local file = io.open("$work/requests.bin", "rb")
local data = file:read("*a")
file:close()
local position = 1
while position <= #data do
  local a, b, c, d = data:byte(position, position + 3)
  local length = ((a * 256 + b) * 256 + c) * 256 + d
  requests[#requests + 1] = data:sub(position + 4, position + 3 + length)
  position = position + 4 + length
end
local sent = 0
request = function()
  sent = sent + 1
  return requests[sent] or requests[#requests]
end
done = function(summary, latency, _)
  io.write(string.format("wrk-summary %d %d %d %d %d\n", summary.requests, summary.duration,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(99), #requests))
end
EOF
cat > "$work/health.lua" << 'EOF'
wrk.path = "/api/health"
done = function(summary, latency, _)
  io.write(string.format("wrk-summary %d %d %d %d 0\n", summary.requests, summary.duration,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(99)))
end
EOF

ticks_per_second=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# "rate p99_ms errors cpu_us_per_request" of one wrk window; errors are answers of status 400 or more and socket
# errors, as wrk counts them.
window() {
  local script=$1 before after line
  before=$(cpu_ticks "$server_pid")
  line=$(wrk -t1 -c"$connections" -d"${seconds}s" -s "$script" "http://127.0.0.1:$port/" | grep '^wrk-summary') ||
    { echo "bench-wrk: wrk gave no summary" >&2; exit 1; }
  after=$(cpu_ticks "$server_pid")
  read -r _ requests micros errors p99 available <<< "$line"
  [[ "$requests" =~ ^[1-9][0-9]*$ && "$micros" =~ ^[1-9][0-9]*$ && "$errors" =~ ^[0-9]+$ && "$p99" =~ ^[0-9]+$ ]] ||
    { echo "bench-wrk: unexpected wrk summary: $line" >&2; exit 1; }
  # wrk also sends up to one request per connection that the summary does not count, resends after socket errors,
  # and asks the script for one to check it: a window that came that close to the end may have repeated a deposit.
  if [ "$available" -gt 0 ] && [ $((requests + errors + connections + 1)) -ge "$available" ]; then
    echo "bench-wrk: the window nearly ran out of its $available pre-signed deposits" >&2
    exit 1
  fi
  echo "$((requests * 1000000 / micros)) $((p99 / 1000)).$(printf '%03d' $((p99 % 1000))) $errors $(((after - before) * 1000000 / ticks_per_second / requests))"
}

echo "| run | health req/s | mint req/s | × health | mint p99 ms | errors | server CPU µs/mint | health CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|"
for run in $(seq 1 "$runs"); do
  mkdir -p "$work/db$run"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  env PORT="$port" HOST=127.0.0.1 SQLITE_PATH="$work/db$run/gateway.sqlite3" PROVIDER_SQLITE_PATH="$work/db$run/provider.sqlite3" \
    PKR_DEMO_SEED_ON_START=1 PKR_WEBHOOK_PUSH=1 PKR_RECONCILE_INTERVAL_S=0 PKR_INVARIANT_CHECK_INTERVAL_S=0 LOG_LEVEL=error \
    MAX_SINGLE_MINT_PKR=5000000.00 "$binary" serve &
  server_pid=$!
  up=0
  for _ in $(seq 1 200); do
    if curl -sf "http://127.0.0.1:$port/api/health" > /dev/null; then up=1; break; fi
    sleep 0.05
  done
  [ "$up" = 1 ] || { echo "bench-wrk: the server did not start" >&2; exit 1; }
  python3 "$work/prepare.py" "$port" "$customers" $((seconds * 25000)) "$work/requests.bin"
  wrk -t1 -c"$connections" -d2s "http://127.0.0.1:$port/api/health" > /dev/null  # warm-up
  health=$(window "$work/health.lua")
  mints=$(window "$work/replay.lua")
  read -r health_rate _ health_errors health_cpu <<< "$health"
  read -r mint_rate mint_p99 mint_errors mint_cpu <<< "$mints"
  [ "$health_errors" = 0 ] || { echo "bench-wrk: $health_errors health requests failed" >&2; exit 1; }
  # A rejected deposit is answered faster than a mint: a window with any is no mint rate.
  [ "$mint_errors" = 0 ] || { echo "bench-wrk: $mint_errors mint requests failed" >&2; exit 1; }
  # Hundredths, truncated as pkr bench prints them.
  hundredths=$((mint_rate * 100 / health_rate))
  echo "| $run | $health_rate | $mint_rate | $((hundredths / 100)).$(printf '%02d' $((hundredths % 100))) | $mint_p99 | $mint_errors | $mint_cpu | $health_cpu |"
  kill "$server_pid"; wait "$server_pid" 2> /dev/null || true
  server_pid=
  rm -rf "$work/db$run"
done
