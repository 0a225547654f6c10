"""`RedisStorage` on a real 3-master Redis Cluster on loopback: the transcripts, two servers
of ours on one cluster, and queues spread over the masters yet listed as one.

Not on a cluster (okq's layout, not ours): a queue whose name is empty or starts with ``}``
has no hash tag, so its keys fall in different slots and the pop script is refused there
(CROSSSLOT); the defect probes use the empty name, so they run on one Redis only
(tests/transports/test_redis_storage.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import format_result, load_transcripts, run_scenarios
from okq_transports.server import RedisStorage, ThreadedServer
from tests.redis_fixtures import HOST, RedisClusterProcesses, Resp
from tests.transports.redis_interop import OK, check_two_instances, status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    nodes = RedisClusterProcesses(Path(tmp_path_factory.mktemp("cluster"))).start()
    try:
        yield nodes
    finally:
        nodes.stop()


def ours(cluster: RedisClusterProcesses, **options: float) -> ThreadedServer:
    storage = RedisStorage.from_cluster_url(cluster.seed_url, **options)
    assert storage.cluster
    return ThreadedServer(HOST, 0, storage=storage, seed=0).start()


@pytest.mark.timeout(180)
def test_transcripts_over_a_cluster(cluster: RedisClusterProcesses) -> None:
    server = ours(cluster)
    try:
        scenarios = [s for s in load_transcripts() if not s.requires_redis]
        report = run_scenarios(server.host, server.port, scenarios, jobs=8)
        failures = "\n".join(format_result(r) for r in report.results if r.failed)
        assert report.failed == 0, failures
        assert report.passed == len(scenarios)
    finally:
        server.stop()


def test_two_instances_on_one_cluster(cluster: RedisClusterProcesses) -> None:
    a = ours(cluster, sweep_interval_s=0.5)
    b = ours(cluster, sweep_interval_s=0.5)
    try:
        found = check_two_instances((a.host, a.port), (b.host, b.port))
        assert found.notes == []
        print(found)
    finally:
        a.stop()
        b.stop()


def test_queues_spread_over_the_masters_are_listed_as_one(
    cluster: RedisClusterProcesses,
) -> None:
    a = ours(cluster)
    b = ours(cluster)
    names = [b"spread-%02d" % n for n in range(24)]
    ca, cb = Resp(HOST, a.port), Resp(HOST, b.port)
    try:
        for n, name in enumerate(names):
            assert (ca if n % 2 else cb).call("QLPUSH", name, "e", "c") == OK
            assert ca.call("QLPUSH", name, "f", "d") == OK
        assert cb.call("QRPOP", names[0], "EX", 60).startswith(b"*2\r\n")
        by_node = cluster.keys_by_node(b"queue:{spread-*")
        holding = {port for port, keys in by_node.items() if keys}
        assert len(holding) >= 2, by_node  # 24 hash tags over 3 masters
        for name in names:  # every key of one queue on one master (its hash tag)
            where = {p for p, keys in by_node.items() for k in keys if b"{%s}" % name in k}
            assert len(where) == 1, (name, where)
        listed = ca.call("QSTATUS")
        assert listed == cb.call("QSTATUS")
        assert listed.startswith(b"*%d\r\n" % len(names))
        for name in names:
            assert status(name, 2, 1 if name == names[0] else 0, 0) in listed
        assert ca.call("QINFO") == cb.call("QINFO")
    finally:
        for name in names:
            ca.call("QFLUSH", name)
        ca.close()
        cb.close()
        a.stop()
        b.stop()
