"""Prints grpc-chat's figures beside the Go seed server's for the same door, with the ratio, and
server CPU per delivery as a multiple of the floor (CPU per write() to as many loopback sockets),
from the JSON lines bench/compare.sh writes. Usage: summarise.py results.jsonl"""

import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
runs = {}
floor = {}
for row in rows:
    parameters, figures = dict(row["parameters"]), dict(row["figures"])
    if row["server"] == "floor":
        floor[int(parameters["sockets"])] = figures["cpu_us_per_write"]
    else:
        runs[(row["server"], row["scenario"])] = (parameters, figures)


def floor_for(parameters):
    """The floor at the nearest socket count to the run's subscribers."""
    sockets = int(parameters.get("subscribers", parameters.get("streams", 0)) or 0)
    if not floor or not sockets:
        return None
    return floor[min(floor, key=lambda n: abs(n - sockets))]


for name, value in sorted(floor.items()):
    print(f"floor: {value:.2f} us of CPU per write() to {name} loopback sockets")
print(f"{'scenario':<14} {'figure':<32} {'grpc-chat':>12} {'go seed':>12} {'ratio':>7} {'/floor':>7} {'go/floor':>8}")
for (server, scenario), (parameters, ours) in runs.items():
    if server != "grpc-chat":
        continue
    seed = "go-ws" if parameters.get("door") == "websocket" else "go"
    theirs = runs.get((seed, scenario), ({}, {}))[1]
    for name, value in ours.items():
        other = theirs.get(name)
        ratio = f"{value / other:.2f}" if other else "-"
        other_text = f"{other:.1f}" if other is not None else "-"
        to_floor = go_to_floor = ""
        base = floor_for(parameters)
        if name == "server_cpu_us_per_delivery" and base:
            to_floor = f"{value / base:.2f}"
            go_to_floor = f"{other / base:.2f}" if other else "-"
        print(f"{scenario:<14} {name:<32} {value:>12.1f} {other_text:>12} {ratio:>7} {to_floor:>7} {go_to_floor:>8}")
