"""The throughput table and the performance issue's goals, from run.sh's per-round results.

Usage: python3 bench/report.py RESULTS_TSV [LATENCY_MS]

RESULTS_TSV has one line per round, pipeline depth, target and test:
round, depth, target, test, rps (or FAIL), p50 ms, p99 ms, commands sent,
commands that reached redis. bench/run.sh writes it for one run (rounds 1,
2, ...); bench/pool.sh concatenates several runs' with the round written
RUN.ROUND, and then each goal also says in how many of the runs it was met.
A ratio is always taken within one round (both targets ran seconds apart);
a median is over rounds. p50 and p99 may be empty (runs reconstructed from
run.sh's log, which does not print them).
"""
import statistics
import sys
from collections import defaultdict

TARGETS = ("direct", "twemproxy", "roomproxy")
TESTS = ("SET", "GET")


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def per_round_ratios(rows):
    """(depth, test, target, base) -> [target rps / base rps, one per round both ran]."""
    rps = defaultdict(dict)  # (depth, test, target) -> round -> rps
    for r in rows:
        if r["rps"] is not None:
            rps[(r["depth"], r["test"], r["target"])][r["round"]] = r["rps"]
    out = {}
    for (depth, test, target), by_round in rps.items():
        for base in ("direct", "twemproxy"):
            if target == "direct" or (target == "twemproxy" and base == "twemproxy"):
                continue
            b = rps.get((depth, test, base), {})
            out[(depth, test, target, base)] = [v / b[k] for k, v in by_round.items() if b.get(k, 0) > 0]
    return out


def goals(latency):
    """The issue's goals for roomproxy: (text, depth, base, at least)."""
    if latency:
        return [("-P 1 at least 0.95 of direct", 1, "direct", 0.95),
                ("-P 16 at least 0.95 of direct", 16, "direct", 0.95)]
    return [("-P 1 at least 1.0 times twemproxy", 1, "twemproxy", 1.0),
            ("-P 1 at least 0.8 of direct", 1, "direct", 0.8),
            ("-P 16 at least 1.3 times twemproxy", 16, "twemproxy", 1.3),
            ("stretch: -P 1 at least 1.0 of direct", 1, "direct", 1.0)]


def goal_medians(ratios, depth, base):
    return [med(ratios.get((depth, t, "roomproxy", base), [])) for t in TESTS]


def is_met(vals, at_least):
    return all(v is not None and v >= at_least for v in vals)


def read(path):
    rows = []
    for line in open(path):
        if not line.strip():
            continue
        f = line.rstrip("\n").split("\t")
        rows.append({
            "round": f[0], "depth": int(f[1]), "target": f[2], "test": f[3],
            "rps": None if f[4] == "FAIL" else float(f[4]),
            "p50": float(f[5]) if f[5] else None, "p99": float(f[6]) if f[6] else None,
            "sent": int(f[7]), "reached": int(f[8]),
        })
    return rows


def main():
    rows = read(sys.argv[1])
    latency = len(sys.argv) > 2 and sys.argv[2] != ""
    ratios = per_round_ratios(rows)

    print("| pipeline | test | target | median rps | ratio to direct | ratio to twemproxy | p50 ms | p99 ms | reached redis |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for depth in (1, 16):
        for test in TESTS:
            for target in TARGETS:
                rs = [r for r in rows if (r["depth"], r["test"], r["target"]) == (depth, test, target)]
                ok = [r for r in rs if r["rps"] is not None]
                failed = len(rs) - len(ok)
                rps = fmt(med([r["rps"] for r in ok]), ".0f") + (f" ({failed} FAILED)" if failed else "")
                to = {b: med(ratios.get((depth, test, target, b), [])) for b in ("direct", "twemproxy")}
                if target == "direct":
                    to["direct"] = 1.0 if ok else None
                if target == "twemproxy":
                    to["twemproxy"] = 1.0 if ok else None
                p50 = med([r["p50"] for r in ok if r["p50"] is not None])
                p99 = med([r["p99"] for r in ok if r["p99"] is not None])
                sent = sum(r["sent"] for r in rs)
                reached = sum(r["reached"] for r in rs)
                reach = f"{reached / sent:.3f}" if sent else "n/a"
                print(f"| {depth} | {test} | {target} | {rps} | {fmt(to['direct'], '.2f')} | "
                      f"{fmt(to['twemproxy'], '.2f') if target != 'direct' else 'n/a'} | "
                      f"{fmt(p50, '.3f')} | {fmt(p99, '.3f')} | {reach} |")

    # Pooled runs: which rounds belong to which run, to count the runs that met each goal.
    runs = defaultdict(list)
    for r in rows:
        if "." in r["round"]:
            runs[r["round"].split(".")[0]].append(r)
    run_ratios = [per_round_ratios(rs) for rs in runs.values()]

    print()
    print("Goals (per-round ratios, medians over rounds):")
    for text, depth, base, at_least in goals(latency):
        vals = goal_medians(ratios, depth, base)
        shown = " / ".join(fmt(v, ".3f") for v in vals)  # 3 digits: 0.996 is not 1.00
        # How one round's ratio spreads: whether the median clears the bar by
        # more than the machine's noise, which one median cannot say.
        per = [ratios.get((depth, t, "roomproxy", base), []) for t in TESTS]
        spread = ""
        if all(per):
            above = " / ".join(f"{sum(x >= at_least for x in rs)} of {len(rs)}" for rs in per)
            ranges = " / ".join(f"{min(rs):.2f} to {max(rs):.2f}" for rs in per)
            spread = f"rounds at or above: {above}; range over rounds: {ranges}"
        if run_ratios:
            n = sum(is_met(goal_medians(rr, depth, base), at_least) for rr in run_ratios)
            spread = f"runs whose median met it: {n} of {len(run_ratios)}; " + spread
        print(f"- {text}: SET / GET {shown}: {'met' if is_met(vals, at_least) else 'NOT met'}"
              + (f" ({spread})" if spread else ""))
    if run_ratios:
        required = [g for g in goals(latency) if not g[0].startswith("stretch")]
        n = sum(all(is_met(goal_medians(rr, d, b), a) for _, d, b, a in required) for rr in run_ratios)
        print(f"- every required goal in one run: {n} of {len(run_ratios)} runs")


if __name__ == "__main__":
    main()
