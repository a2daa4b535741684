#!/usr/bin/env python3
"""Replica lag and catch-up measurements for benches/replication.sh.

Probe mode (the lag table):
  repl_lag_sampler.py probe SECONDS MASTER_RESP REPLICA_RESP...
writes a probe key to the master every 20 ms through its RESP listener
(`host:port`), and polls every replica with GET until the key appears.
A probe's lag on a replica is the time from the master's +OK to the first
GET on that replica that returns the value: how stale a replica read can
be. Prints `probing` once connected (the caller starts its load then),
stops after SECONDS or at SIGINT (whichever first), waits at most 10 s
for outstanding probes, then prints one line per replica:
`replica N: S samples, lag p50 X ms, p99 Y ms, max Z ms, missed M`.
With LAG_CSV set, also appends one row per sample to that file:
`LAG_DATE,LAG_LABEL,replica N,seconds since the first probe,lag ms`
(the replication-lag chart's data, scripts/charts.py).
Polls are pipelined, one round per replica every ~0.5 ms, so the
resolution is about a millisecond.

Catch-up mode: `--catchup MASTER_HTTP REPLICA_RESP T0 START_OFFSET [WHICH]`
waits (at most CATCHUP_TIMEOUT s, default 900) until the replica's offset
WHICH (`end`, the default: appended; `durable`: fsynced; polled every
2 ms with `INFO persistence` on its RESP listener) reaches the master's
end (read once from its /metrics), then prints `MB SECONDS`: the megabytes (10^6 bytes) from
START_OFFSET to the master's end and the seconds since T0 (Unix seconds).
`--end HTTP` prints a node's end offset (from /metrics).
"""
import os
import signal
import socket
import sys
import time
import urllib.request

PROBE_EVERY = 0.020
POLL_PAUSE = 0.0005
DRAIN = 10.0


def end_offset(http, which="end"):
    name = f"kvstore_replication_{which}_offset"
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return int(float(line.split()[1]))
    raise RuntimeError(f"{http}: no {name}")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


class Resp:
    """A minimal RESP2 client: enough for SET and GET."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, *commands):
        out = []
        for args in commands:
            out.append(b"*%d\r\n" % len(args))
            for a in args:
                a = a.encode() if isinstance(a, str) else a
                out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                self.buf += data
            value, self.buf = self.buf[:n], self.buf[n + 2:]
            return value
        return rest


def probe(seconds, master, replicas):
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    m = Resp(master)
    rs = [Resp(r) for r in replicas]
    run = f"{time.time_ns():x}"
    lags = [[] for _ in rs]
    series = [[] for _ in rs]  # (seconds since start, lag ms) per replica
    outstanding = []  # (key, t_ack, set of replica indexes not yet seen)
    # Connected and ready for SIGINT: the caller starts its load now.
    print("probing", flush=True)
    start = time.monotonic()
    sent = 0
    max_probes = int(seconds / PROBE_EVERY) + 1
    drain_until = None
    while True:
        now = time.monotonic()
        sending = not stop and now - start < seconds and sent < max_probes
        if not sending and drain_until is None:
            drain_until = now + DRAIN
        if not sending and (not outstanding or now > drain_until):
            break
        if sending and now >= start + sent * PROBE_EVERY:
            key = f"lagprobe:{run}:{sent}"
            m.send(("SET", key, "1"))
            m.reply()
            outstanding.append((key, time.monotonic(), set(range(len(rs)))))
            sent += 1
        for i, r in enumerate(rs):
            keys = [o for o in outstanding if i in o[2]]
            if not keys:
                continue
            r.send(*[("GET", o[0]) for o in keys])
            for o in keys:
                if r.reply() is not None:
                    lag = (time.monotonic() - o[1]) * 1000
                    lags[i].append(lag)
                    series[i].append((o[1] - start, lag))
                    o[2].discard(i)
        outstanding = [o for o in outstanding if o[2]]
        time.sleep(POLL_PAUSE)
    missed = [sum(1 for o in outstanding if i in o[2]) for i in range(len(rs))]
    if os.environ.get("LAG_CSV"):
        with open(os.environ["LAG_CSV"], "a") as f:
            for i, xs in enumerate(series):
                for t, lag in xs:
                    f.write(f"{os.environ.get('LAG_DATE', '')},{os.environ.get('LAG_LABEL', '')},"
                            f"replica {i + 1},{t:.3f},{lag:.2f}\n")
    for i, xs in enumerate(lags):
        print(f"replica {i + 1}: {len(xs)} samples, lag p50 {pct(xs, .5):.1f} ms, "
              f"p99 {pct(xs, .99):.1f} ms, max {max(xs, default=float('nan')):.1f} ms, "
              f"missed {missed[i]}")


def info_field(conn, section, name):
    """One field of `INFO section` on a RESP connection, as an int."""
    conn.send(("INFO", section))
    for line in conn.reply().decode().splitlines():
        if line.startswith(name + ":"):
            return int(line.split(":", 1)[1])
    raise RuntimeError(f"INFO {section}: no {name}")


def catchup(master, replica, t0, start_off, which):
    if which not in ("end", "durable"):
        raise SystemExit(f"--catchup: WHICH is end or durable, not {which!r}")
    field = {"end": "kvstore_log_end_offset", "durable": "kvstore_durable_end_offset"}[which]
    limit = float(os.environ.get("CATCHUP_TIMEOUT", "900"))
    target = end_offset(master)
    # The replica is polled on one RESP connection with `INFO persistence`
    # (a few hundred bytes), not through /metrics: a poll of the whole
    # metrics page every few milliseconds costs both sides a share of a
    # CPU, taken from the catch-up it measures.
    conn = None
    while True:
        try:
            conn = conn or Resp(replica)
            if info_field(conn, "persistence", field) >= target:
                break
        except OSError:
            conn = None  # the replica's RESP port is not up yet
        if time.time() - t0 > limit:
            raise SystemExit(f"catch-up did not finish in {limit:.0f} s")
        time.sleep(0.002)
    secs = time.time() - t0
    print(f"{(target - start_off) / 1e6:.1f} {secs:.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "--catchup":
        catchup(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]),
                sys.argv[6] if len(sys.argv) > 6 else "end")
    elif sys.argv[1] == "--end":
        print(end_offset(sys.argv[2]))
    elif sys.argv[1] == "probe":
        probe(float(sys.argv[2]), sys.argv[3], sys.argv[4:])
    else:
        raise SystemExit(__doc__)
