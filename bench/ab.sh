#!/usr/bin/env bash
# Before and after: two builds of grpc-chat through the same scenarios, the grpc-chat runs of
# bench/compare.sh (ONLY picks some, as there) and the two engines of bench/engines.sh,
# alternating build by build, ROUNDS times, so that each pair ran minutes apart on the same
# machine, under one load generator (AFTER_BIN's). Prints, per scenario and figure, each build's median [range] over the rounds and the
# after/before ratio of the medians; the range is the noise of a build's own repeated runs.
#
# Usage: bench/ab.sh BEFORE_BIN AFTER_BIN [ROUNDS, default 2] [OUT_DIR, default bench/results/ab]
set -euo pipefail
cd "$(dirname "$0")/.."
before=$(realpath "$1") after=$(realpath "$2") rounds=${3:-2} out=${4:-bench/results/ab}
mkdir -p "$out"
: > "$out/ab.jsonl"
for round in $(seq "$rounds"); do
  for side in before after; do
    bin=$before
    [[ $side == after ]] && bin=$after
    echo "== round $round: $side ($bin)" >&2
    GRPC_CHAT_BIN=$bin BENCH_BIN=$after SERVERS=grpc-chat \
      bench/compare.sh "$out/$side-$round" 1 >/dev/null
    GRPC_CHAT_BIN=$bin BENCH_BIN=$after bench/engines.sh 1 "$out/$side-$round" >/dev/null
    cat "$out/$side-$round/results.jsonl" "$out/$side-$round/engines.jsonl" \
      | python3 -c '
import json, sys
side, round_ = sys.argv[1], int(sys.argv[2])
for line in sys.stdin:
    row = json.loads(line)
    if row.get("server") == "floor":
        continue
    label = row.get("label") or row.get("scenario")
    print(json.dumps({"side": side, "round": round_, "label": label, "figures": dict(row["figures"])}))
' "$side" "$round" >> "$out/ab.jsonl"
  done
done

python3 - "$out/ab.jsonl" <<'PY'
import json, statistics, sys
from collections import defaultdict
FIGURES = ["requests_per_s", "deliveries_per_s", "latency_p50_us", "latency_p99_us",
           "server_cpu_us_per_delivery", "server_cpu_us_per_request", "rss_bytes_per_stream",
           "missing", "duplicates"]
values = defaultdict(lambda: defaultdict(list))
for line in open(sys.argv[1]):
    row = json.loads(line)
    for name, value in row["figures"].items():
        if name in FIGURES:
            values[(row["label"], name)][row["side"]].append(value)
def show(xs):
    if not xs:
        return "-"
    m = statistics.median(xs)
    return f"{m:.1f} [{min(xs):.1f}-{max(xs):.1f}]" if len(xs) > 1 else f"{m:.1f}"
print(f"{'scenario':<20} {'figure':<28} {'before':>26} {'after':>26} {'after/before':>12}")
for (label, name), sides in sorted(values.items()):
    b, a = sides.get("before", []), sides.get("after", [])
    ratio = "-"
    if b and a and statistics.median(b):
        ratio = f"{statistics.median(a) / statistics.median(b):.3f}"
    print(f"{label:<20} {name:<28} {show(b):>26} {show(a):>26} {ratio:>12}")
PY
