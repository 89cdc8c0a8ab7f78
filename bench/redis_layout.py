"""Redis's own CPU per cached score, per-key strings against hashes.

Why the score cache keeps its entries in Redis hashes (see the cache crate's
docs and BENCHMARKS.md): this writes and reads N entries of 300 bytes each
way, by piping raw commands through `redis-cli --pipe` (so no client's cost
is in the figure), and prints the CPU time Redis itself spent (`INFO cpu`)
per entry:

    python3 bench/redis_layout.py [N]      # default 300000; needs redis-cli

Layouts: `SET key value PX ttl` per entry (what Patron did before), the same
with replies off, and `HSET hash field value ...` with 16 and 64 fields per
command plus a `PEXPIRE hash ttl NX` per command (what Patron does now,
inside MULTI/EXEC). Each is written twice: new keys, then over the same
keys. Reads: `GET` per entry, `MGET` of 100, `HGET` per entry. It uses
Redis's database 15 and empties it (FLUSHDB) before and after.
"""
import os
import random
import subprocess
import sys
import tempfile

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
VALUE = b"v" * 300
TTL = "3600000"
CLI = ["redis-cli", "-n", "15"]


def cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def key(i):
    return "patron:score:%036d" % i


def writes(layout):
    if layout == "set":
        return b"".join(cmd("SET", key(i), VALUE, "PX", TTL) for i in range(N))
    if layout == "set, replies off":
        body = b"".join(cmd("SET", key(i), VALUE, "PX", TTL) for i in range(N))
        return cmd("CLIENT", "REPLY", "OFF") + body + cmd("CLIENT", "REPLY", "ON")
    per = int(layout.split()[1])
    out = []
    for b in range(N // per):
        h = "patron:bucket:%d" % b
        args = ["HSET", h]
        for i in range(b * per, (b + 1) * per):
            args += [key(i), VALUE]
        out.append(cmd(*args))
        out.append(cmd("PEXPIRE", h, TTL, "NX"))
    return b"".join(out)


def reads(layout, ids):
    if layout == "GET":
        return b"".join(cmd("GET", key(i)) for i in ids)
    if layout == "MGET of 100":
        return b"".join(cmd("MGET", *[key(i) for i in ids[k:k + 100]])
                        for k in range(0, len(ids), 100))
    return b"".join(cmd("HGET", "patron:bucket:%d" % (i // 16), key(i)) for i in ids)


def redis_cpu():
    info = subprocess.run(CLI + ["info", "cpu"], capture_output=True, text=True).stdout
    fields = dict(l.split(":", 1) for l in info.splitlines() if ":" in l)
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


def pipe(payload):
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(payload)
        path = f.name
    try:
        before = redis_cpu()
        with open(path, "rb") as stdin:
            subprocess.run(CLI + ["--pipe"], stdin=stdin, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
        return redis_cpu() - before
    finally:
        os.unlink(path)


def flush():
    subprocess.run(CLI + ["flushdb"], stdout=subprocess.DEVNULL, check=True)


def main():
    print(f"Redis CPU per entry, {N} entries of {len(VALUE)} bytes:")
    for layout in ["set", "set, replies off", "hset 16", "hset 64"]:
        flush()
        payload = writes(layout)
        new = pipe(payload)
        over = pipe(payload)
        print(f"  write, {layout:18}: new keys {new / N * 1e6:.2f} us, "
              f"over existing {over / N * 1e6:.2f} us")
    flush()
    pipe(writes("set"))
    pipe(writes("hset 16"))
    random.seed(1)
    ids = [random.randrange(N) for _ in range(N)]
    for layout in ["GET", "MGET of 100", "HGET"]:
        spent = pipe(reads(layout, ids))
        print(f"  read, {layout:18}: {spent / N * 1e6:.2f} us per lookup")
    flush()


if __name__ == "__main__":
    main()
