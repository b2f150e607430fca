#!/usr/bin/env bash
# What people write instead: curl for the token, the aws CLI for the write.
# (The client secret on curl's command line is visible in `ps`: part of why not to.)
set -euo pipefail
body=$(curl -sS --fail -X POST "$ROTATOR_TOKEN_URL" \
  -d grant_type=client_credentials \
  --data-urlencode "client_id=$ROTATOR_CLIENT_ID" \
  --data-urlencode "client_secret=$ROTATOR_CLIENT_SECRET")
"$AWS_CLI" secretsmanager put-secret-value --secret-id "$SHELL_SECRET_ID" \
  --secret-string "$body" >/dev/null
