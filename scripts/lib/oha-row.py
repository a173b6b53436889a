"""One benchmark row from oha's JSON output, as one JSON line on stdout.

Usage: python3 scripts/lib/oha-row.py NAME OHA_JSON LOAD

Errors count every non-2xx answer and every connection error, except the requests oha still
had in flight when its time was up ("aborted due to deadline"): those are the load
generator's, not failures of the server.
"""
import json
import sys

name, path, load = sys.argv[1:4]
j = json.load(open(path))
s = j["summary"]
p = j.get("latencyPercentiles", {})
codes = j.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
other = {k: v for k, v in j.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
errs = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(other.values())
print(json.dumps({"row": name, "rps": s["requestsPerSec"], "p50": p.get("p50", 0) * 1000,
                  "p99": p.get("p99", 0) * 1000, "ok": ok, "errors": errs,
                  "codes": codes, "errs": other, "load": load}))
