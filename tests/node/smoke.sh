#!/usr/bin/env bash
# Starts hook_server.js, curls every point (right/wrong/missing secret, success and
# error scripts) and prints each request/response pair. Usage: tests/node/smoke.sh
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules ] || npm ci --ignore-scripts >/dev/null
OUT=$(mktemp)
node hook_server.js --port 0 --secret s3cr3t >"$OUT" 2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$OUT"' EXIT
for _ in $(seq 50); do [ -s "$OUT" ] && break; sleep 0.1; done
PORT=$(head -1 "$OUT" | sed 's/[^0-9]//g')
call() { # point script authorization-header-or-empty
  echo "### POST /$1/$2   Authorization: ${3:-<none>}"
  curl -s -w '\n-> HTTP %{http_code}\n\n' -X POST "http://127.0.0.1:$PORT/$1/$2" \
    -H 'Content-Type: application/json' ${3:+-H "Authorization: $3"} \
    --data-binary "@bodies/$1.json"
}
call credentials-exchange ce-add-claim "Bearer s3cr3t"
call credentials-exchange ce-add-claim "Bearer wrong"
call credentials-exchange ce-add-claim ""
call credentials-exchange ce-no-scope "Bearer s3cr3t"
call credentials-exchange ce-invalid-scope "Bearer s3cr3t"
call credentials-exchange ce-invalid-request "Bearer s3cr3t"
call credentials-exchange ce-error "Bearer s3cr3t"
call credentials-exchange ce-throw "Bearer s3cr3t"
call pre-user-registration pur-metadata "Bearer s3cr3t"
call pre-user-registration pur-deny "Bearer s3cr3t"
call pre-user-registration pur-noop "Bearer s3cr3t"
call post-user-registration post-reg-noop "Bearer s3cr3t"
call post-user-registration post-reg-fail "Bearer s3cr3t"
call post-change-password pcp-noop "Bearer s3cr3t"
call send-phone-message spm-send "Bearer s3cr3t"
call send-phone-message spm-fail "Bearer s3cr3t"
call send-phone-message spm-send "Bearer wrong"
