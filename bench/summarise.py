"""Prints grpc-chat's and the Go server's figures side by side, with the ratio, from the JSON lines
written by bench/compare.sh. Usage: summarise.py results.jsonl"""

import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {(row["server"], row["scenario"]): dict(row["figures"]) for row in rows}
print(f"{'scenario':<8} {'figure':<32} {'grpc-chat':>14} {'go':>14} {'ratio':>8}")
for scenario in ["unary", "fanout", "fanout-paced", "rooms", "idle", "idle-waves"]:
    ours, theirs = by.get(("grpc-chat", scenario), {}), by.get(("go", scenario), {})
    for name, value in ours.items():
        other = theirs.get(name)
        ratio = f"{value / other:.2f}" if other else "-"
        other_text = f"{other:.1f}" if other is not None else "-"
        print(f"{scenario:<8} {name:<32} {value:>14.1f} {other_text:>14} {ratio:>8}")
