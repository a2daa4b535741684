"""Drives a kvstore RESP listener with the redis-py client (PyPI `redis`).

    .venv/bin/python tests/resp/client.py HOST PORT SCENARIO

Scenarios: `master` (the whole command set against a master) and
`replica HOST:PORT` (reads work, writes fail with READONLY naming the
master). Exits 0 when every check holds; otherwise prints the failed check
and exits 1. An ImportError (redis-py missing) exits 2 with a message:
`make deps` installs redis-py into the repository's virtualenv, .venv/.
"""

import sys
import time

try:
    import redis
except ImportError as e:  # fail loudly, never skip
    print(f"redis-py is not installed ({e}); run: make deps", file=sys.stderr)
    sys.exit(2)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_error(fn, fragment):
    try:
        fn()
    except redis.ResponseError as e:
        check(fragment in str(e), f"error {e!r} should contain {fragment!r}")
        return str(e)
    raise AssertionError(f"expected an error containing {fragment!r}")


def master(r):
    check(r.ping() is True, "PING")
    check(r.echo(b"hi") == b"hi", "ECHO")
    check(r.set("k", "v") is True, "SET")
    check(r.get("k") == b"v", "GET after SET")
    check(r.get("missing") is None, "GET of a missing key is nil")
    check(r.exists("k", "k", "missing") == 2, "EXISTS counts each argument")
    # Binary-safe keys and values: every byte value, including CR, LF, NUL.
    blob = bytes(range(256))
    check(r.set(blob, blob * 3) is True, "SET binary")
    check(r.get(blob) == blob * 3, "GET binary")
    # NX / XX.
    check(r.set("nx", "1", nx=True) is True, "SET NX on a new key")
    check(r.set("nx", "2", nx=True) is None, "SET NX on an existing key is nil")
    check(r.get("nx") == b"1", "SET NX did not overwrite")
    check(r.set("xx", "1", xx=True) is None, "SET XX on a missing key is nil")
    check(r.get("xx") is None, "SET XX did not create")
    check(r.set("nx", "3", xx=True) is True, "SET XX on an existing key")
    check(r.get("nx") == b"3", "SET XX overwrote")
    expect_error(lambda: r.execute_command("SET", "a", "b", "NX", "XX"), "syntax error")
    # MSET / MGET / DEL.
    check(r.mset({"m1": "a", "m2": "b", "m3": "c"}) is True, "MSET")
    check(r.mget("m1", "missing", "m3") == [b"a", None, b"c"], "MGET")
    check(r.delete("m1", "m2", "missing", "m1") == 2, "DEL counts distinct existing keys")
    check(r.mget("m1", "m2", "m3") == [None, None, b"c"], "DEL removed them")
    check(r.delete("m3") == 1 and r.delete("m3") == 0, "DEL single")
    # Pipelines: 500 writes and reads in one round trip each.
    p = r.pipeline(transaction=False)
    for i in range(500):
        p.set(f"p:{i}", f"value-{i}")
    check(all(x is True for x in p.execute()), "pipelined SETs")
    p = r.pipeline(transaction=False)
    for i in range(500):
        p.get(f"p:{i}")
    got = p.execute()
    check(got == [f"value-{i}".encode() for i in range(500)], "pipelined GETs")
    check(r.dbsize() == 503, f"DBSIZE {r.dbsize()}")
    # Errors.
    expect_error(lambda: r.execute_command("FLUSHALL"), "unknown command 'FLUSHALL'")
    expect_error(lambda: r.execute_command("GET"), "wrong number of arguments for 'get' command")
    expect_error(lambda: r.execute_command("MSET", "a"), "wrong number of arguments")
    expect_error(lambda: r.execute_command("SELECT", "1"), "DB index is out of range")
    check(r.execute_command("SELECT", "0") in (True, b"OK", "OK"), "SELECT 0")
    # The connection still works after errors.
    check(r.get("k") == b"v", "GET after errors")
    # INFO, parsed by the client.
    info = r.info()
    check(info["role"] == "master", f"role {info.get('role')}")
    check(info["connected_slaves"] == 0, "connected_slaves")
    check("master_repl_offset" in info, "master_repl_offset")
    check(info["aof_enabled"] == 1, "aof_enabled")
    check(info["total_commands_processed"] > 1000, "total_commands_processed")
    check(info["db0"]["keys"] == 503, f"keyspace {info.get('db0')}")
    check(r.info("replication")["role"] == "master", "INFO replication")
    # CLIENT and CONFIG.
    check(r.client_setname("tester") is True, "CLIENT SETNAME")
    check(r.client_getname() == "tester" or r.client_getname() == b"tester", "CLIENT GETNAME")
    check(isinstance(r.client_id(), int), "CLIENT ID")
    cfg = r.config_get("appendonly")
    check(cfg.get("appendonly") in ("yes", b"yes"), f"CONFIG GET {cfg}")
    check(r.command_count() >= 15, "COMMAND COUNT")
    check("get" in r.command(), "COMMAND lists get")
    # HELLO 3 is refused, HELLO 2 works.
    expect_error(lambda: r.execute_command("HELLO", "3"), "NOPROTO")
    hello = r.execute_command("HELLO", "2")
    check(b"proto" in hello, f"HELLO 2 {hello}")
    expiry(r)


def expiry(r):
    """The expiry commands as redis-py sends them."""
    check(r.set("t", "v", ex=100) is True, "SET EX")
    check(99 <= r.ttl("t") <= 100, f"TTL {r.ttl('t')}")
    check(90_000 <= r.pttl("t") <= 100_000, "PTTL")
    check(r.set("t", "v2", keepttl=True) is True and r.ttl("t") > 0, "SET KEEPTTL")
    check(r.set("t", "v3", get=True) == b"v2", "SET GET")
    check(r.ttl("t") == -1, "a plain SET clears the expiry")
    check(r.ttl("missing") == -2, "TTL of a missing key")
    check(r.expire("t", 50) is True, "EXPIRE")
    check(r.expire("t", 40, gt=True) is False, "EXPIRE GT")
    check(r.expire("t", 60, gt=True) is True, "EXPIRE GT later")
    check(r.pexpire("t", 30_000, lt=True) is True, "PEXPIRE LT")
    check(r.expire("t", 10, nx=True) is False, "EXPIRE NX")
    check(r.expire("missing", 10) is False, "EXPIRE of a missing key")
    check(r.expiretime("t") > 0 and r.pexpiretime("t") > 0, "EXPIRETIME")
    check(r.persist("t") is True and r.ttl("t") == -1, "PERSIST")
    check(r.setex("se", 100, "v") is True and r.ttl("se") > 0, "SETEX")
    check(r.psetex("pe", 100_000, "v") is True and r.pttl("pe") > 0, "PSETEX")
    check(r.set("px", "v", px=1) is True, "SET PX 1")
    deadline = time.monotonic() + 20
    while r.exists("px"):
        check(time.monotonic() < deadline, "SET PX 1 never expired")
        time.sleep(0.01)
    check(r.get("px") is None and r.ttl("px") == -2, "an expired key is absent")
    check(r.expireat("t", 1) is True and r.get("t") is None, "EXPIREAT in the past deletes")
    expect_error(lambda: r.set("t", "v", ex=0), "invalid expire time in 'set' command")
    expect_error(lambda: r.execute_command("SET", "t", "v", "EX", "x"), "not an integer")
    expect_error(lambda: r.execute_command("EXPIRE", "t", "1", "GT", "LT"), "GT and LT")
    expect_error(
        lambda: r.execute_command("EXPIRE", "t", "99999999999999999"),
        "invalid expire time in 'expire' command",
    )


def replica(r, master_addr):
    msg = expect_error(lambda: r.set("k", "v"), "You can't write against a read only replica")
    check(master_addr in msg, f"READONLY names the master: {msg}")
    check(isinstance(r.get("k"), (bytes, type(None))), "reads work on a replica")
    expect_error(lambda: r.mset({"a": "1"}), "read only replica")
    expect_error(lambda: r.delete("a"), "read only replica")
    info = r.info("replication")
    check(info["role"] == "slave", f"role {info.get('role')}")
    host, port = master_addr.rsplit(":", 1)
    check(info["master_host"] == host and str(info["master_port"]) == port, f"master in INFO: {info}")


def main():
    host, port, scenario = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    r = redis.Redis(host=host, port=port, protocol=2, socket_timeout=20)
    try:
        if scenario == "master":
            master(r)
        elif scenario == "replica":
            replica(r, sys.argv[4])
        else:
            raise AssertionError(f"unknown scenario {scenario}")
    except (AssertionError, redis.RedisError) as e:
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
