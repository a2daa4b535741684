#!/usr/bin/env python3
"""Replica lag sampler for benches/replication.sh.

Lag mode (default): `repl_lag_sampler.py MASTER_HTTP REPLICA_HTTP...` polls
kvstore_replication_end_offset on every node until SIGINT, then prints, per
replica, p50/p99/max of the time (ms) from a master sample until that
replica's end first reached the offset the master had then. The poll period
(a few ms) bounds the resolution.

Catch-up mode: `--catchup MASTER_HTTP REPLICA_HTTP T0 START_OFFSET` waits
until the replica's end equals the master's, printing MB/s since T0 (Unix
seconds). `--end HTTP` prints a node's end offset.
"""
import signal
import sys
import time
import urllib.request


def end_offset(http):
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("kvstore_replication_end_offset "):
                return int(float(line.split()[1]))
    raise RuntimeError(f"{http}: no kvstore_replication_end_offset")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def lag(master, replicas):
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    msamples, rsamples = [], {r: [] for r in replicas}
    deadline = time.monotonic() + 600
    while not stop and time.monotonic() < deadline:
        msamples.append((time.monotonic(), end_offset(master)))
        for r in replicas:
            rsamples[r].append((time.monotonic(), end_offset(r)))
    for i, r in enumerate(replicas, 1):
        lags, j, rs = [], 0, rsamples[r]
        for t, off in msamples:
            while j < len(rs) and (rs[j][0] < t or rs[j][1] < off):
                j += 1
            if j == len(rs):
                break
            lags.append(max(0.0, rs[j][0] - t) * 1000)
        print(f"  replica {i}: {len(lags)} samples, lag p50 {pct(lags, .5):.1f} ms, "
              f"p99 {pct(lags, .99):.1f} ms, max {max(lags, default=float('nan')):.1f} ms")


def catchup(master, replica, t0, start_off):
    target = end_offset(master)
    while True:
        if end_offset(replica) >= target:
            break
        if time.time() - t0 > 900:
            raise SystemExit("catch-up did not finish in 900 s")
        time.sleep(0.005)
    secs = time.time() - t0
    mb = (target - start_off) / 1e6
    print(f"catch-up: {mb:.0f} MB in {secs:.2f} s = {mb / secs:.0f} MB/s "
          f"(offset {start_off} to {target}, timed from the replica's process start)")


if __name__ == "__main__":
    if sys.argv[1] == "--catchup":
        catchup(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "--end":
        print(end_offset(sys.argv[2]))
    else:
        lag(sys.argv[1], sys.argv[2:])
