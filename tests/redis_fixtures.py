"""Real Redis for the tests of `RedisStorage`: a ``redis-server`` (or a 3-master Redis
Cluster) on free loopback ports, and a raw RESP connection that shows the exact bytes.

Without ``redis-server`` on PATH the tests that need it are skipped, except under ``CI=true``,
where they fail (CI installs it).  Every process started here is stopped by its own pid.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pytest

from conformance import frame_reply

HOST: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 10.0


def need(program: str) -> str:
    """The path of ``program``; skip the test without it (fail under ``CI=true``)."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port(*, cluster_bus: bool = False) -> int:
    """A loopback port free now; with ``cluster_bus`` also port + 10000 (a cluster node's bus),
    so below 55536."""
    if not cluster_bus:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
            return port
    for _ in range(200):
        port = random.randrange(20000, 55000)
        try:
            with socket.socket() as first, socket.socket() as bus:
                first.bind((HOST, port))
                bus.bind((HOST, port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class Resp:
    """One raw RESP2 connection: `call` sends a command and returns the reply's exact bytes."""

    def __init__(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self._buf = bytearray()

    def send(self, *args: bytes | str | int) -> None:
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        self.sock.sendall(out)

    def read(self) -> bytes:
        deadline = time.monotonic() + 60.0
        while True:
            end = frame_reply(self._buf) if self._buf else None
            if end is not None:
                reply = bytes(self._buf[:end])
                del self._buf[:end]
                return reply
            if time.monotonic() > deadline:
                raise TimeoutError("no complete reply")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self._buf += data

    def call(self, *args: bytes | str | int) -> bytes:
        self.send(*args)
        return self.read()

    def close(self) -> None:
        self.sock.close()


def wait_until_answers(port: int, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = Resp(HOST, port, timeout_s=1.0)
            try:
                if conn.call("PING") == b"+PONG\r\n":
                    return
            finally:
                conn.close()
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis-server on port {port} did not answer")
        time.sleep(0.05)


class RedisProcess:
    """A ``redis-server`` on a loopback port, without persistence; `stop`/`start` keep the
    port (the data goes: nothing is saved)."""

    def __init__(
        self, workdir: Path, extra: Sequence[str] = (), *, cluster_bus: bool = False
    ) -> None:
        self.program = need("redis-server")
        self.port = free_port(cluster_bus=cluster_bus)
        self.workdir = workdir
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisProcess:
        argv = [self.program, "--port", str(self.port), "--bind", HOST, "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.workdir), *self.extra]
        self.proc = subprocess.Popen(
            argv, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until_answers(self.port)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def flushall(self) -> None:
        conn = Resp(HOST, self.port)
        try:
            assert conn.call("FLUSHALL") == b"+OK\r\n"
        finally:
            conn.close()


class RedisClusterProcesses:
    """Three ``redis-server --cluster-enabled yes`` masters on loopback, joined with
    ``redis-cli --cluster create``, ready once ``cluster info`` says ``cluster_state:ok``."""

    def __init__(self, workdir: Path) -> None:
        self.nodes: list[RedisProcess] = []
        for n in range(3):
            node_dir = workdir / f"node{n}"
            node_dir.mkdir()
            conf = node_dir / "nodes.conf"
            self.nodes.append(
                RedisProcess(
                    node_dir,
                    ["--cluster-enabled", "yes", "--cluster-config-file", str(conf)],
                    cluster_bus=True,
                )
            )

    @property
    def seed_url(self) -> str:
        return f"redis://{HOST}:{self.nodes[0].port}"

    def start(self) -> RedisClusterProcesses:
        cli = need("redis-cli")
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{HOST}:{node.port}" for node in self.nodes]
            create = ["--cluster", "create", *addresses, "--cluster-replicas", "0"]
            subprocess.run(
                [cli, *create, "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )
            deadline = time.monotonic() + 20.0
            while not all(self._ok(node.port) for node in self.nodes):
                if time.monotonic() > deadline:
                    raise TimeoutError("the Redis Cluster did not reach cluster_state:ok")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _ok(port: int) -> bool:
        conn = Resp(HOST, port)
        try:
            return b"cluster_state:ok" in conn.call("CLUSTER", "INFO")
        finally:
            conn.close()

    def keys_by_node(self, pattern: bytes) -> dict[int, list[bytes]]:
        """Port of each master -> its keys matching ``pattern`` (``KEYS``: tests only)."""
        found: dict[int, list[bytes]] = {}
        for node in self.nodes:
            conn = Resp(HOST, node.port)
            try:
                found[node.port] = bulk_strings(conn.call("KEYS", pattern))
            finally:
                conn.close()
        return found

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def bulk_strings(reply: bytes) -> list[bytes]:
    """The elements of a flat RESP array of bulk strings."""
    assert reply.startswith(b"*"), reply
    count, _, rest = reply[1:].partition(b"\r\n")
    items = []
    for _ in range(int(count)):
        assert rest.startswith(b"$"), rest
        size, _, rest = rest[1:].partition(b"\r\n")
        items.append(rest[: int(size)])
        rest = rest[int(size) + 2 :]
    return items
