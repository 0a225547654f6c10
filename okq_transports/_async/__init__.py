"""The one client driver, written once as async code: connection, pool, client methods.

Owns: moving bytes between okq_proto's machines and a stream (`streams.AsyncStream`), the
bounded pool with failover, and the client methods with okq_proto's retry policy.  Every door
runs on it: asyncio and trio directly (their backends in ``okq_transports._backends``), the
``redis.asyncio`` adapter over borrowed connections, and the blocking doors through
``okq_transports._sync``, which ``scripts/unasync.py`` generates from this package (the same
code with ``async`` / ``await`` taken out and the names mapped): edit here, then run
``python scripts/unasync.py``; CI checks the generated files are up to date.
Must not know: asyncio, trio, sockets or redis-py (that is the backends'), okq's rules and
reply shapes (that is okq_proto).
"""
