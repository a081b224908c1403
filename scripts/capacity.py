#!/usr/bin/env python3
"""Past one machine: how far one Redis node, or a Redis Cluster, carries stateful-mcp,
on paper and by a small simulation, from per-call costs the load benchmark measured.

    scripts/capacity.py                       # the figures recorded in BENCHMARKS.md
    scripts/capacity.py --json /tmp/load.jsonl  # costs from `cargo bench --bench mcp_load -- --json F`
    scripts/capacity.py --replica-cores 4 --redis-cores 1

Per call type it prints the Redis round trips, commands and bytes per call, the calls/s
one Redis core carries (1e6 / Redis CPU µs per call), the calls/s one replica core
carries, and the number of replicas (of --replica-cores cores each) at which one Redis
node saturates. The simulation then runs a closed loop: W clients per replica, each
call spending its replica CPU on one of the replica's cores (half before its Redis
round trips, half after) and its Redis CPU on Redis's one command thread (split evenly
over its round trips, served in arrival order), and reports calls/s and p99 as replicas
are added, so the knee where Redis saturates is visible. Service times are exponential
around the measured means; the run is seeded and bounded (--calls per point).

Cluster rows (`cluster-*` scenarios, Redis figures summed over the masters with each
master's share in `shards`) say what the shards carry: a call's Redis work lands on its
session's shard, so the cluster saturates when its busiest master does, at 1e6 / (that
master's CPU µs per call of the whole load) calls/s. Printed with the spread measured
(a few sessions, so uneven by chance) and spread evenly (many sessions), against the
one-node row of the same call (`redis-*`); the simulation runs each cluster row on as
many Redis threads as it has shards, calls spread evenly.

Standard library only. The costs measured on one 2-vCPU VM with the load driver on the
same cores include loopback syscalls on both ends; a dedicated Redis host with its own
NIC spends less per command, so the figures are conservative.
"""

import argparse
import heapq
import json
import random
import sys

# Per-call costs measured by `cargo bench --bench mcp_load` (BENCHMARKS.md, "Before and
# after the per-call work", the `after` build): replica CPU µs, Redis CPU µs, round
# trips, commands Redis runs (scripts included), bytes to and from Redis.
DEFAULTS = {
    "redis-2026": dict(replica_us=52.3, redis_us=16.2, round_trips=1, commands=5, bytes_in=290, bytes_out=24),
    "redis-2025": dict(replica_us=120.6, redis_us=57.2, round_trips=3, commands=13, bytes_in=1062, bytes_out=205),
    "redis-2025-noevents": dict(replica_us=85.9, redis_us=18.0, round_trips=1, commands=5, bytes_in=290, bytes_out=23),
}


def load_json(path, build):
    """Mean costs per `redis-*` and `cluster-*` scenario of replica build `build` from
    the benchmark's JSON lines."""
    sums = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            name = row.get("scenario", "")
            redis = row.get("redis")
            if row.get("kind") != "row" or not name.startswith(("redis-", "cluster-")) or not redis:
                continue
            if row.get("build") != build:
                continue
            acc = sums.setdefault(name, dict(n=0, replica_us=0.0, redis_us=0.0, commands=0.0,
                                             round_trips=0.0, bytes_in=0.0, bytes_out=0.0))
            per_call = redis.get("commands_per_call", {})
            acc["n"] += 1
            acc["replica_us"] += row["cpu_us_per_call"].get("replicas", 0.0)
            acc["redis_us"] += redis.get("cpu_us_per_call", 0.0)
            acc["commands"] += sum(per_call.values())
            # Every call's Redis work is scripts: one script run is one round trip, and
            # what scripts run inside (also counted by Redis) is not.
            acc["round_trips"] += per_call.get("evalsha", 0.0) + per_call.get("eval", 0.0)
            acc["bytes_in"] += redis.get("net_in_bytes_per_call", 0.0)
            acc["bytes_out"] += redis.get("net_out_bytes_per_call", 0.0)
            shards = [s.get("cpu_us_per_call", 0.0) for s in redis.get("shards", [])]
            if shards:
                # Each master's CPU per call, by its index (the same masters all run);
                # the busiest per row, since which master that is changes by chance.
                acc.setdefault("shards", [0.0] * len(shards))
                acc["shards"] = [a + b for a, b in zip(acc["shards"], shards)]
                acc["busiest_us"] = acc.get("busiest_us", 0.0) + max(shards)
    costs = {}
    for name, acc in sums.items():
        n = acc.pop("n")
        shards = acc.pop("shards", None)
        costs[name] = {k: v / n for k, v in acc.items()}
        costs[name]["round_trips"] = max(1, round(costs[name]["round_trips"]))
        if shards:
            costs[name]["shards"] = [v / n for v in shards]
    return costs


def paper(costs, replica_cores, redis_cores):
    print(f"{'call':<22} {'RTT':>3} {'cmds':>5} {'B in/out':>10} {'Redis µs':>9} "
          f"{'calls/s/Redis core':>19} {'calls/s/replica core':>21} {'replicas to saturate':>21}")
    for name, c in costs.items():
        per_redis_core = 1e6 / c["redis_us"]
        per_replica_core = 1e6 / c["replica_us"]
        replicas = redis_cores * per_redis_core / (replica_cores * per_replica_core)
        print(f"{name:<22} {c['round_trips']:>3.0f} {c['commands']:>5.1f} "
              f"{c['bytes_in']:>5.0f}/{c['bytes_out']:<4.0f} {c['redis_us']:>9.1f} "
              f"{per_redis_core:>19,.0f} {per_replica_core:>21,.0f} {replicas:>21.1f}")


def cluster(costs, replica_cores):
    """What the cluster rows' shards carry, against the one-node row of the same call."""
    rows = {name: c for name, c in costs.items() if c.get("shards")}
    if not rows:
        return
    print(f"\n# Cluster: the shards saturate with their busiest master\n")
    print(f"{'call':<20} {'shards':>6} {'Redis µs':>9} {'per master µs':>20} "
          f"{'carried, measured':>18} {'carried, even':>14} {'one node':>9} {'× node':>7} "
          f"{'2-core replicas':>16}")
    for name, c in rows.items():
        shards = c["shards"]
        measured = 1e6 / c["busiest_us"]
        even = len(shards) * 1e6 / c["redis_us"]
        node = costs.get(name.replace("cluster-", "redis-", 1))
        one = 1e6 / node["redis_us"] if node else None
        replicas = even / (replica_cores * 1e6 / c["replica_us"])
        per_master = " / ".join(f"{v:.1f}" for v in shards)
        print(f"{name:<20} {len(shards):>6} {c['redis_us']:>9.1f} {per_master:>20} "
              f"{measured:>18,.0f} {even:>14,.0f} "
              f"{(f'{one:,.0f}' if one else '-'):>9} {(f'{even / one:.2f}' if one else '-'):>7} "
              f"{replicas:>16.1f}")


def simulate(c, replicas, replica_cores, redis_cores, clients_per_replica, calls, seed):
    """Closed-loop discrete-event run; returns (calls/s, p99 ms). With several Redis
    cores (Cluster shards) each call goes to the shard of its session, at random."""
    rng = random.Random(seed)
    rtt = int(c["round_trips"])
    before = c["replica_us"] / 2
    after = c["replica_us"] / 2
    redis_each = c["redis_us"] / rtt
    # Free times of every replica core and of Redis's thread (µs).
    cores = [[0.0] * replica_cores for _ in range(replicas)]
    redis_free = [0.0] * redis_cores
    events = []  # (time, seq, replica, stage, started, round trips left, shard)
    seq = 0
    for r in range(replicas):
        for w in range(clients_per_replica):
            heapq.heappush(events, (rng.random(), seq, r, "start", 0.0, 0, 0))
            seq += 1
    done, latencies, first_end = 0, [], None
    warmup = calls // 10
    while done < calls + warmup:
        t, _, r, stage, started, left, shard = heapq.heappop(events)
        if stage == "start":
            started, stage, left = t, "cpu_before", rtt
            shard = rng.randrange(redis_cores)
        if stage == "cpu_before" or stage == "cpu_after":
            i = min(range(replica_cores), key=lambda k: cores[r][k])
            begin = max(t, cores[r][i])
            cost = rng.expovariate(1 / (before if stage == "cpu_before" else after))
            cores[r][i] = begin + cost
            nxt = "redis" if stage == "cpu_before" else "end"
            heapq.heappush(events, (begin + cost, seq, r, nxt, started, left, shard))
        elif stage == "redis":
            begin = max(t, redis_free[shard])
            redis_free[shard] = begin + rng.expovariate(1 / redis_each)
            nxt = "redis" if left > 1 else "cpu_after"
            heapq.heappush(events, (redis_free[shard], seq, r, nxt, started, left - 1, shard))
        elif stage == "end":
            done += 1
            if done > warmup:
                first_end = first_end if first_end is not None else t
                latencies.append(t - started)
            heapq.heappush(events, (t, seq, r, "start", 0.0, 0, 0))
        seq += 1
    span = t - first_end
    latencies.sort()
    return len(latencies) / span * 1e6, latencies[int(len(latencies) * 0.99)] / 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="JSON lines of `mcp_load --json`")
    parser.add_argument("--build", default="current",
                        help="the replica build whose rows --json gives (default: current)")
    parser.add_argument("--replica-cores", type=int, default=2)
    parser.add_argument("--redis-cores", type=int, default=1,
                        help="Redis command threads (1 for one node; shards for Cluster)")
    parser.add_argument("--clients", type=int, default=32, help="clients per replica")
    parser.add_argument("--calls", type=int, default=40000, help="calls per simulated point")
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    costs = load_json(args.json, args.build) if args.json else DEFAULTS
    if not costs:
        sys.exit("capacity: no redis-* rows in the JSON lines")
    print(f"# Paper: {args.replica_cores} cores per replica, {args.redis_cores} Redis core(s)\n")
    paper(costs, args.replica_cores, args.redis_cores)
    cluster(costs, args.replica_cores)
    print(f"\n# Simulation: {args.clients} clients per replica, "
          f"{args.redis_cores} Redis command thread(s), a cluster row's shards each\n")
    for name, c in costs.items():
        threads = len(c["shards"]) if c.get("shards") else args.redis_cores
        print(f"{name} ({threads} Redis thread(s)):")
        for n in range(1, args.max_replicas + 1):
            rate, p99 = simulate(c, n, args.replica_cores, threads, args.clients,
                                 args.calls, args.seed)
            util = rate * c["redis_us"] / 1e6 / threads
            print(f"  {n} replica(s): {rate:>9,.0f} calls/s  p99 {p99:6.2f} ms  Redis busy {util:4.0%}")


if __name__ == "__main__":
    main()
