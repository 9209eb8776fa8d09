#!/bin/sh
# An organisation's key service in its container (deploy/Containerfile, target keyservice):
# make its SoftHSM2 token on first start, wait for what the organisation pins (config.json,
# copied from KEYSERVICE_PINNED when that names a file), then serve the signed API (port 8443)
# and its metrics (9108) on every address. The token's PIN never leaves $KEYSERVICE_STATE.
set -eu
: "${KEYSERVICE_LABEL:?name the organisation (its token label)}"
state="${KEYSERVICE_STATE:?}"
if [ ! -f "$state/token.pin" ]; then
  python -m keyservice init "$state" --label "$KEYSERVICE_LABEL"
fi
if [ -n "${KEYSERVICE_PINNED:-}" ]; then
  until [ -f "$KEYSERVICE_PINNED" ]; do
    echo "waiting for $KEYSERVICE_PINNED" >&2
    sleep 2
  done
  cp "$KEYSERVICE_PINNED" "$state/config.json"
fi
host="${KEYSERVICE_HOST:-0.0.0.0}"
exec python -m keyservice serve "$state" --label "$KEYSERVICE_LABEL" \
  --host "$host" --port "${KEYSERVICE_PORT:-8443}" \
  --metrics-host "$host" --metrics-port "${KEYSERVICE_METRICS_PORT:-9108}"
