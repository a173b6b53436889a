"""One benchmark row from oha's JSON output, as one JSON line on stdout.

Usage: python3 scripts/lib/oha-row.py NAME OHA_JSON LOAD [CPU_TICKS]

CPU_TICKS: the clock ticks (user + system) the serving process used during the row; with it,
the row carries the server's CPU time per answered request in microseconds, a figure that moves
far less than requests/s when the load generator and the server share a noisy machine.

Errors count every non-2xx answer and every connection error, except the requests oha still
had in flight when its time was up ("aborted due to deadline"): those are the load
generator's, not failures of the server.
"""
import json
import os
import sys

name, path, load = sys.argv[1:4]
ticks = int(sys.argv[4]) if len(sys.argv) > 4 else None
j = json.load(open(path))
s = j["summary"]
p = j.get("latencyPercentiles", {})
codes = j.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
other = {k: v for k, v in j.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
errs = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(other.values())
answered = sum(codes.values())
hz = os.sysconf("SC_CLK_TCK")
cpu_us = ticks * 1e6 / hz / answered if ticks is not None and answered else None
print(json.dumps({"row": name, "rps": s["requestsPerSec"], "p50": p.get("p50", 0) * 1000,
                  "p99": p.get("p99", 0) * 1000, "ok": ok, "errors": errs,
                  "codes": codes, "errs": other, "load": load, "cpu_us": cpu_us}))
