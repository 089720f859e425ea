"""Prints grpc-chat's figures beside the Go seed server's for the same door, as the median over
the rounds of a bench/compare.sh run with the range in brackets, and the ratio to the Go seed and
(server CPU per delivery) to the floor, each taken within a round (the servers of one round ran
minutes apart on the same machine) and then summarised the same way.

Usage: summarise.py results.jsonl"""

import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
# (server, scenario) -> round -> (parameters, figures); the floor by socket count -> round -> figure.
runs = defaultdict(dict)
floor = defaultdict(dict)
for row in rows:
    parameters, figures = dict(row["parameters"]), dict(row["figures"])
    round_ = row.get("round", 1)
    if row["server"] == "floor":
        floor[int(parameters["sockets"])][round_] = figures["cpu_us_per_write"]
    else:
        runs[(row["server"], row["scenario"])][round_] = (parameters, figures)


def summary(values, digits=1):
    """`median [min-max]` of `values`, or `-` when there are none."""
    if not values:
        return "-"
    median = f"{statistics.median(values):.{digits}f}"
    if len(values) == 1:
        return median
    return f"{median} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def floor_for(parameters, round_):
    """The floor of round `round_` at the socket count nearest the run's subscribers."""
    sockets = int(parameters.get("subscribers", parameters.get("streams", 0)) or 0)
    if not floor or not sockets:
        return None
    return floor[min(floor, key=lambda n: abs(n - sockets))].get(round_)


rounds = sorted({r for by_round in runs.values() for r in by_round})
print(f"rounds: {len(rounds)}; each figure is the median [min-max] over them")
for sockets, by_round in sorted(floor.items()):
    print(f"floor: {summary(list(by_round.values()), 2)} us of CPU per write() to {sockets} loopback sockets")
print(f"{'scenario':<14} {'figure':<28} {'grpc-chat':>24} {'go seed':>24} {'ratio':>18} {'/floor':>18} {'go/floor':>18}")
for (server, scenario), ours_by_round in runs.items():
    if server != "grpc-chat":
        continue
    parameters = next(iter(ours_by_round.values()))[0]
    seed = "go-ws" if parameters.get("door") == "websocket" else "go"
    theirs_by_round = runs.get((seed, scenario), {})
    for name in next(iter(ours_by_round.values()))[1]:
        ours, theirs, ratios, to_floor, go_to_floor = [], [], [], [], []
        for round_, (_, figures) in ours_by_round.items():
            value = figures[name]
            ours.append(value)
            other = theirs_by_round.get(round_, ({}, {}))[1].get(name)
            if other is not None:
                theirs.append(other)
                if other:
                    ratios.append(value / other)
            base = floor_for(parameters, round_)
            if name == "server_cpu_us_per_delivery" and base:
                to_floor.append(value / base)
                if other:
                    go_to_floor.append(other / base)
        print(
            f"{scenario:<14} {name:<28} {summary(ours):>24} {summary(theirs):>24} "
            f"{summary(ratios, 2):>18} {summary(to_floor, 2):>18} {summary(go_to_floor, 2):>18}"
        )
