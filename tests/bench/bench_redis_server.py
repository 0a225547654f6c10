"""Our server on Redis beside another okq server on the same Redis: throughput and CPU per op.

Run as a script (the other server is already running; ours is started here)::

    python tests/bench/bench_redis_server.py --redis 127.0.0.1:6379 \\
        --peer 127.0.0.1:4790 --peer-pid PID [--connections 1,50] [--ops 20000] [--runs 5]

Workloads, each with N client connections, one command in flight per connection:

* push: ``QLPUSH <q> <unique id> <100 B>``;
* pop: ``QRPOP <q> EX 0`` on a queue filled beforehand (through the same server) with as many
  events as the run pops.

The load comes from ``--procs`` processes, each driving its share of the connections with raw
non-blocking sockets and commands encoded before the clock starts.  Runs alternate between the
two servers (peer, ours, ours, peer, ...), each bounded by ``--ops`` and ``--seconds``; the
figures are medians over ``--runs`` runs.  Server CPU per op is the utime + stime of the
server's process (``/proc/PID/stat``) over the run, divided by the ops done.  Ratios are
ours/peer from the same run.  Each run uses queue names of its own, removed afterwards.

``--profile FILE`` runs ours in a process of its own under cProfile (its event loop on the
main thread) and writes the statistics to FILE when the bench ends.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
PAYLOAD: Final = b"x" * 100
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
WORKLOADS: Final = ("push", "pop")


def encode(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def reply_end(buf: bytes | bytearray, at: int = 0) -> int | None:
    """Where the RESP2 reply starting at ``at`` ends, or None if it is not all there."""
    line = buf.find(b"\r\n", at)
    if line < 0:
        return None
    kind = buf[at : at + 1]
    if kind in (b"+", b"-", b":"):
        return line + 2
    n = int(buf[at + 1 : line])
    if kind == b"$":
        end = line + 2 + n + 2 if n >= 0 else line + 2
        return end if end <= len(buf) else None
    pos: int | None = line + 2
    for _ in range(max(n, 0)):
        assert pos is not None
        pos = reply_end(buf, pos) if pos < len(buf) else None
        if pos is None:
            return None
    return pos


@dataclass(frozen=True)
class Share:
    """One load process's part of a run."""

    address: tuple[str, int]
    commands: list[list[bytes]]  # per connection, sent one at a time
    seconds: float


@dataclass(frozen=True)
class Done:
    ops: int
    errors: int
    nils: int
    started: float
    ended: float


def drive(share: Share) -> Done:
    """Send each connection's commands one at a time, until all are answered or time is up."""
    sel = selectors.DefaultSelector()
    socks = [socket.create_connection(share.address, timeout=10) for _ in share.commands]
    state: dict[int, tuple[socket.socket, list[bytes], bytearray]] = {}
    for sock, cmds in zip(socks, share.commands, strict=True):
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state[sock.fileno()] = (sock, cmds, bytearray())
    ops = errors = nils = 0
    started = time.monotonic()
    deadline = started + share.seconds
    next_index = dict.fromkeys(state, 0)
    try:
        for fd, (sock, cmds, _) in state.items():
            if cmds:
                sock.sendall(cmds[0])
                next_index[fd] = 1
                sel.register(sock, selectors.EVENT_READ, fd)
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                fd = key.data
                sock, cmds, buf = state[fd]
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                buf += data
                end = reply_end(buf)
                if end is None:
                    continue
                if buf[:1] == b"-":
                    errors += 1
                elif buf[:3] == b"*-1" or buf[:3] == b"$-1":
                    nils += 1
                del buf[:end]
                ops += 1
                i = next_index[fd]
                if i < len(cmds):
                    sock.sendall(cmds[i])
                    next_index[fd] = i + 1
                else:
                    sel.unregister(sock)
        return Done(ops, errors, nils, started, time.monotonic())
    finally:
        sel.close()
        for sock in socks:
            sock.close()


def pipelined(address: tuple[str, int], commands: Sequence[bytes], batch: int = 500) -> None:
    """Send ``commands`` in batches, reading every reply (filling a queue before a pop run)."""
    with socket.create_connection(address, timeout=30) as sock:
        for at in range(0, len(commands), batch):
            chunk = commands[at : at + batch]
            sock.sendall(b"".join(chunk))
            buf, pos, seen = bytearray(), 0, 0
            while seen < len(chunk):
                data = sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("server closed the connection")
                buf += data
                while seen < len(chunk) and (end := reply_end(buf, pos)) is not None:
                    if buf[pos : pos + 1] == b"-":
                        raise RuntimeError(bytes(buf[pos:end]).decode(errors="replace"))
                    pos, seen = end, seen + 1


def cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass(frozen=True)
class Sample:
    rate: float  # ops/s
    cpu_us: float  # server CPU per op, µs


def one_run(
    pool: multiprocessing.pool.Pool,
    address: tuple[str, int],
    pid: int,
    workload: str,
    connections: int,
    ops: int,
    seconds: float,
    procs: int,
) -> Sample:
    tag = uuid.uuid4().hex[:12].encode()
    queue = b"bench-" + tag
    per_conn = max(1, ops // connections)
    total = per_conn * connections
    if workload == "push":
        ids = (b"%s-%08d" % (tag, i) for i in range(total))
        flat = [encode(b"QLPUSH", queue, i, PAYLOAD) for i in ids]
    else:
        pipelined(
            address,
            [encode(b"QLPUSH", queue, b"%s-%08d" % (tag, i), PAYLOAD) for i in range(total)],
        )
        flat = [encode(b"QRPOP", queue, b"EX", b"0")] * total
    per = [flat[c * per_conn : (c + 1) * per_conn] for c in range(connections)]
    shares = [Share(address, per[p::procs], seconds) for p in range(min(procs, connections))]
    before = cpu_s(pid)
    results = pool.map(drive, shares)
    used = cpu_s(pid) - before
    pipelined(address, [encode(b"QFLUSH", queue)])
    done = sum(r.ops for r in results)
    errors = sum(r.errors for r in results)
    nils = sum(r.nils for r in results)
    if errors or nils:
        raise RuntimeError(f"{workload}: {errors} error replies, {nils} empty pops")
    elapsed = max(r.ended for r in results) - min(r.started for r in results)
    return Sample(done / elapsed, used / max(done, 1) * 1e6)


@contextmanager
def our_server(redis: str, profile: str | None) -> Iterator[tuple[tuple[str, int], int]]:
    """Ours in a subprocess on a free loopback port: (address, pid)."""
    url = f"redis://{redis}/0"
    if profile is None:
        argv = [sys.executable, "-m", "okq_transports", "serve", "--port", "0", "--redis", url]
    else:
        argv = [sys.executable, __file__, "--serve-profiled", profile, "--redis", redis]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"our server did not start: {line!r}")
        host, port = line.strip().rsplit(" ", 1)[-1].rsplit(":", 1)
        yield (host, int(port)), proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def serve_profiled(redis: str, out: str) -> None:
    """Ours with its event loop on this main thread, under cProfile, until SIGINT/SIGTERM."""
    import asyncio
    import cProfile

    from okq_transports.server import EmbeddedServer, RedisStorage

    async def main() -> None:
        storage = RedisStorage(f"redis://{redis}/0")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with EmbeddedServer("127.0.0.1", 0, storage=storage) as server:
            print(f"okq server listening on {server.address}", flush=True)
            await stop.wait()

    profiler = cProfile.Profile()
    profiler.runcall(asyncio.run, main())
    profiler.dump_stats(out)


def parse_address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def bench(
    redis: str,
    peer: tuple[str, int],
    peer_pid: int,
    connections: Sequence[int],
    ops: int,
    runs: int,
    seconds: float = 30.0,
    procs: int = 2,
    profile: str | None = None,
    out: list[str] | None = None,
) -> None:
    """Print (and collect in ``out``) one row per workload and connection count."""
    lines = out if out is not None else []

    def emit(text: str) -> None:
        lines.append(text)
        print(text, flush=True)

    ctx = multiprocessing.get_context("spawn")
    with our_server(redis, profile) as (ours, our_pid), ctx.Pool(procs) as pool:
        servers = {"peer": (peer, peer_pid), "ours": (ours, our_pid)}
        samples: dict[tuple[str, int, str], list[Sample]] = {}
        for run in range(runs):
            for workload in WORKLOADS:
                for n in connections:
                    order = ("peer", "ours") if run % 2 == 0 else ("ours", "peer")
                    for who in order:
                        address, pid = servers[who]
                        sample = one_run(pool, address, pid, workload, n, ops, seconds, procs)
                        samples.setdefault((workload, n, who), []).append(sample)
        emit(
            f"{'workload':<8} {'conns':>5} {'peer op/s':>10} {'ours op/s':>10} {'ours/peer':>9}"
            f" {'peer us/op':>10} {'ours us/op':>10} {'ours/peer':>9}"
        )
        for workload in WORKLOADS:
            for n in connections:
                p = samples[(workload, n, "peer")]
                o = samples[(workload, n, "ours")]
                p_rate = statistics.median(s.rate for s in p)
                o_rate = statistics.median(s.rate for s in o)
                p_cpu = statistics.median(s.cpu_us for s in p)
                o_cpu = statistics.median(s.cpu_us for s in o)
                rate_ratio = statistics.median(b.rate / a.rate for a, b in zip(p, o, strict=True))
                cpu_ratio = statistics.median(
                    b.cpu_us / a.cpu_us if a.cpu_us else float("inf")
                    for a, b in zip(p, o, strict=True)
                )
                emit(
                    f"{workload:<8} {n:>5} {p_rate:>10.0f} {o_rate:>10.0f} {rate_ratio:>8.2f}x"
                    f" {p_cpu:>10.1f} {o_cpu:>10.1f} {cpu_ratio:>8.2f}x"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--redis", required=True, help="HOST:PORT of the Redis both use")
    parser.add_argument("--peer", type=parse_address, help="HOST:PORT of the other server")
    parser.add_argument("--peer-pid", type=int, help="its process id (for its CPU time)")
    parser.add_argument("--connections", default="1,50", help="comma-separated counts")
    parser.add_argument("--ops", type=int, default=20000, help="ops per run at most")
    parser.add_argument("--seconds", type=float, default=30.0, help="a run's time limit")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--profile", help="run ours under cProfile, stats to this file")
    parser.add_argument("--serve-profiled", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_profiled:
        serve_profiled(args.redis, args.serve_profiled)
        return 0
    if args.peer is None or args.peer_pid is None:
        parser.error("--peer and --peer-pid are required")
    counts = [int(n) for n in args.connections.split(",")]
    print(
        f"medians of {args.runs} interleaved runs, at most {args.ops} ops and {args.seconds} s"
        f" per run, {args.procs} load processes, 100 B contents; us/op = server CPU per op"
    )
    bench(
        args.redis,
        args.peer,
        args.peer_pid,
        counts,
        args.ops,
        args.runs,
        seconds=args.seconds,
        procs=args.procs,
        profile=args.profile,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
