#!/usr/bin/env bash
# Rehearse a reversible rewrite against a local emulator: plan, preview, run with a backup,
# verify, undo. Needs the .venv that `make demo` creates; stops at the first command that fails.
set -euo pipefail
batchedit=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/batchedit
test -x "$batchedit" || { echo "no $batchedit: run make demo first" >&2; exit 1; }
cd "$(mktemp -d)"
echo "rehearsal files in $PWD"

# An emulator on a free port with 500 demo messages from the last six days. A throwaway key:
# never put a real one in a rehearsal. Settings of a real app in your shell must not apply here.
unset TIM_REGION TIM_ADMIN TIM_USERSIG
export TIM_SECRET_KEY=rehearsal-only-key TIM_SDKAPPID=1400000000
"$batchedit" emulator --port 0 --state state.jsonl --demo-data 500 --demo-targets chats.jsonl \
    2>emulator.log &
emulator=$!
trap 'kill $emulator 2>/dev/null; wait $emulator 2>/dev/null || true' EXIT
until grep -qs '^emulator listening on ' emulator.log; do
    # An emulator that could not start has said why in its log: show it and stop.
    kill -0 $emulator 2>/dev/null || { cat emulator.log >&2; exit 1; }
    sleep 0.1
done
TIM_BASE_URL=$(sed -n 's/^emulator listening on //p' emulator.log)
export TIM_BASE_URL
curl -fsS -X POST "$TIM_BASE_URL/__emulator/save" >/dev/null
cp state.jsonl before.jsonl

# 1. plan: which messages of the last seven days (the roaming window) would the rule change?
#    Look at a few first, then write the edit file.
now=$(date +%s)
week_ago=$((now - 7 * 86400))
"$batchedit" plan chats.jsonl --since "$week_ago" --until "$now" \
    --replace '555-01\d\d' '[phone redacted]' --preview 3
"$batchedit" plan chats.jsonl --since "$week_ago" --until "$now" \
    --replace '555-01\d\d' '[phone redacted]' --output redact.jsonl

# 2. run it, keeping every message's before-image (exit status 0: every line ok)
"$batchedit" run redact.jsonl --results run.jsonl --backup backup.jsonl

# 3. verify: read every message back (exit status 0: each reads as the edit file says),
#    and the same rule now finds nothing left to change
"$batchedit" verify redact.jsonl --results verify.jsonl
"$batchedit" plan chats.jsonl --since "$week_ago" --until "$now" \
    --replace '555-01\d\d' '[phone redacted]' --preview 3

# 4. changed your mind? see what undo would do (nothing is sent), then put every message back
"$batchedit" undo backup.jsonl --dry-run
"$batchedit" undo backup.jsonl --results undo.jsonl
curl -fsS -X POST "$TIM_BASE_URL/__emulator/save" >/dev/null
cmp before.jsonl state.jsonl
echo "every message is back as it was"
