#!/usr/bin/env bash
# Runs schemathesis against `flowgrid dev` inside a network namespace of its own (loopback only),
# so that nothing the fuzzer makes (connection URLs, agent steps, model base URLs) can reach or
# even resolve a host outside this machine. Started by tests/tests/e2e/openapi.rs as
# `unshare --net -- bash tools/schemathesis/run.sh`, with:
#   FLOWGRID         the flowgrid binary        DATA       a fresh data folder
#   PORT             the host's port            SEED, MAX_EXAMPLES
#   SCHEMATHESIS     tools/schemathesis/.venv/bin/schemathesis
# Run from the workspace root. Exit status: schemathesis's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="$(dirname "$SCHEMATHESIS")/python"
# Bring loopback up in the new namespace (what `ip link set lo up` does, without needing iproute2):
# SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP.
"$python" - <<'PY'
import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))
PY
export FLOWGRID_DATA_DIR="$DATA" FLOWGRID_LOG=warn FLOWGRID_RATE_LIMIT_RPS=0
"$FLOWGRID" dev --no-build --port "$PORT" > "$DATA/dev.log" 2>&1 &
dev=$!
trap 'kill -TERM "$dev" 2>/dev/null; wait "$dev" 2>/dev/null || true' EXIT
"$python" - "$PORT" <<'PY'
import json, sys, time, urllib.error, urllib.request
def apps():
    try:
        r = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/health", timeout=3)
    except urllib.error.HTTPError as e:  # 503 while an app is not ready
        r = e
    except OSError:  # refused while the host starts
        return {}
    try:
        return json.load(r).get("apps", {})
    except ValueError:
        return {}
deadline = time.time() + 120
while True:
    seen = apps()
    if seen and all(a.get("state") == "ready" for a in seen.values()):
        break
    if time.time() > deadline:
        sys.exit(f"flowgrid dev did not get every app ready within 120 s: {seen}")
    time.sleep(0.2)
PY
token="$("$FLOWGRID" token --tenant acme --role owner 2>/dev/null | tail -n 1)"
cd "$DATA"
"$SCHEMATHESIS" --no-color --config-file "$here/schemathesis.toml" run \
  "http://127.0.0.1:$PORT/api/openapi.json" --url "http://127.0.0.1:$PORT" \
  -H "Authorization: Bearer $token" \
  --checks all --exclude-checks positive_data_acceptance --mode all \
  --max-examples "$MAX_EXAMPLES" --seed "$SEED" --workers 1 --request-timeout 30
