#!/usr/bin/env bash
# make demo: rehearse the sample moderation batch against a local emulator, then show the result.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${BIN:-.venv/bin}
work=${DEMO_DIR:-out/demo}
mkdir -p "$work"
rm -f "$work/results.jsonl" "$work/emulator.log"

# The sample history is dated. Move it, and the batch's MsgKeys with it, to end an hour ago, so
# that the emulator's 7-day roaming window (--retention-days) still holds every message.
"$bin/python" - "$here" "$work" <<'PY'
import json, re, sys, time
here, work = sys.argv[1:3]
with open(f"{here}/seed.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
newest = max(row["MsgTimeStamp"] for row in rows if row["type"] == "message")
shift = int(time.time()) - 3600 - newest
def moved(key):
    match = re.fullmatch(r"(\d+_\d+_)(\d+)", key)
    return f"{match[1]}{int(match[2]) + shift}" if match else key
with open(f"{work}/seed.jsonl", "w", encoding="utf-8") as out:
    for row in rows:
        if row["type"] == "message":
            row["MsgTimeStamp"] += shift
            row["MsgKey"] = moved(row["MsgKey"])
        out.write(json.dumps(row) + "\n")
with open(f"{here}/moderation.jsonl", encoding="utf-8") as f, \
        open(f"{work}/moderation.jsonl", "w", encoding="utf-8") as out:
    for line in f:
        edit = json.loads(line)
        edit["MsgKey"] = moved(edit["MsgKey"])
        out.write(json.dumps(edit) + "\n")
PY
cp "$work/seed.jsonl" "$work/state.jsonl"

# A throwaway key shared by the emulator and the run; never use a real key in a rehearsal file.
export TIM_SECRET_KEY=demo-secret-key-not-for-production
"$bin/batchedit" emulator --port 0 --state "$work/state.jsonl" 2>"$work/emulator.log" &
emulator=$!
trap 'kill -TERM $emulator 2>/dev/null; wait $emulator 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    grep -q "listening on" "$work/emulator.log" 2>/dev/null && break
    sleep 0.1
done
url=$(sed -n 's/^emulator listening on //p' "$work/emulator.log")
echo "emulator at $url (state in $work/state.jsonl)"
echo

echo "\$ batchedit run $work/moderation.jsonl --results $work/results.jsonl --rate 20"
echo "  (samples/moderation.jsonl with its MsgKeys moved in time like the history)"
status=0
TIM_SDKAPPID=1400000000 TIM_BASE_URL="$url" \
    "$bin/batchedit" run "$work/moderation.jsonl" --results "$work/results.jsonl" --rate 20 \
    || status=$?
echo
echo "exit status $status (1: one sample line is deliberately broken; see its reason above)"

kill -TERM $emulator && wait $emulator || true
trap - EXIT
echo
echo "before -> after, first three edited messages:"
"$bin/python" - "$work/seed.jsonl" "$work/state.jsonl" "$work/results.jsonl" <<'PY'
import json, sys
before, after, results = (open(p, encoding="utf-8") for p in sys.argv[1:4])
def messages(f):
    return {r["MsgKey"]: r for r in map(json.loads, f) if r["type"] == "message"}
old, new = messages(before), messages(after)
shown = 0
for row in map(json.loads, results):
    if row["outcome"] != "ok" or shown == 3:
        continue
    key = row["MsgKey"]
    for name, msg in (("before", old[key]), ("after ", new[key])):
        text = msg["MsgBody"][0]["MsgContent"].get("Text")
        print(f"  {key} {name}: {text!r} CloudCustomData={msg.get('CloudCustomData')!r}")
    shown += 1
PY
echo
echo "results log: $work/results.jsonl"
