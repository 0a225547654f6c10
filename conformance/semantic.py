"""Semantic checks: okq's documented behaviour that no single transcript pins down.

The transcripts replay byte-exact recordings; a server can match every one of them and
still be wrong where they only sample behaviour: a NOBLOCK flag that is ignored, a QNOTIFY
that waits twice its timeout, claims that never come back, events lost or doubled under
concurrency or pipelining, payloads corrupted past a size.  Each `SemanticCheck` here
drives the server over raw sockets (``_net``/``_resp``, stdlib only), is labelled with the
section of okq-protocol.md it checks, and returns PASS or FAIL with lines saying what was
expected and what came back.  The check bodies live in ``_semantic_timing`` (NOBLOCK,
QNOTIFY, claims), ``_semantic_sweep`` (QNOTIFY's shuffled choice, the sweep's batch,
redeliveries waking nobody), ``_semantic_volume`` (many events, pipelining, concurrency,
payloads) and ``_semantic_shapes`` (exact reply bytes, counts, listings); the timing tolerances are
the constants re-exported below, each documented with the measurement it comes from.

::

    from conformance import run_scenarios
    from conformance.semantic import semantic_checks

    report = run_scenarios("127.0.0.1", 4777, semantic_checks(), jobs=4)
"""

from __future__ import annotations

import dataclasses
from typing import Final

from . import _semantic_shapes as shapes
from . import _semantic_sweep as sweep
from . import _semantic_timing as timing
from . import _semantic_volume as volume
from ._check import SemanticCheck
from ._semantic_base import (
    CONSUMER_DROP_MAX_S,
    FAST_REPLY_MAX_S,
    NOBLOCK_VISIBLE_MAX_S,
    POLL_INTERVAL_S,
    QNOTIFY_EARLY_S,
    QNOTIFY_LATE_S,
    QNOTIFY_WAKE_MAX_S,
    REDELIVERY_EARLY_S,
    REDELIVERY_SLACK_S,
    SUBSCRIBE_SETTLE_S,
    guarded,
)

__all__ = [
    "CONSUMER_DROP_MAX_S",
    "FAST_REPLY_MAX_S",
    "NOBLOCK_VISIBLE_MAX_S",
    "POLL_INTERVAL_S",
    "QNOTIFY_EARLY_S",
    "QNOTIFY_LATE_S",
    "QNOTIFY_WAKE_MAX_S",
    "REDELIVERY_EARLY_S",
    "REDELIVERY_SLACK_S",
    "SUBSCRIBE_SETTLE_S",
    "semantic_checks",
]


def semantic_checks(*, slow: bool = True) -> list[SemanticCheck]:
    """The built-in semantic checks, in the order they should be reported.

    Args:
        slow: include the checks that wait for a restore sweep (expired claims coming
            back; up to ~14 s against okq's 10 s sweep, overlapping the other checks when
            the runner has ``jobs > 1``).

    Returns:
        Fresh `SemanticCheck` records; each uses its own ``conformance-sem-*`` queues.
    """
    checks = [
        SemanticCheck(
            name="semantic_noblock",
            section="§4 QLPUSH",
            description="QLPUSH/QRPUSH ... NOBLOCK reply +OK at once, the event appears within"
            f" {NOBLOCK_VISIBLE_MAX_S} s, a NOBLOCK duplicate (unclaimed or claimed id) is +OK"
            " and dropped, NOBLOCK counts only as the 4th argument",
            queues=(timing.Q_NOBLOCK,),
            run=guarded(timing.check_noblock),
            estimated_duration_s=1.5,
        ),
        SemanticCheck(
            name="semantic_qnotify_timeout",
            section="§6",
            description="QNOTIFY 1 / 2 with nothing to do reply nil after 1 / 2 s"
            f" (-{QNOTIFY_EARLY_S} / +{QNOTIFY_LATE_S} s), QNOTIFY 0 at once, pipelined commands"
            " wait behind it",
            queues=(timing.Q_NT,),
            run=guarded(timing.check_qnotify_timeout),
            estimated_duration_s=4.5,
        ),
        SemanticCheck(
            name="semantic_qnotify_wake",
            section="§13",
            description="a QLPUSH/QRPUSH from another connection wakes every waiting consumer of"
            f" that queue within {QNOTIFY_WAKE_MAX_S} s with the queue's name; pushes to other or"
            " de-registered queues wake nobody",
            queues=(timing.Q_WA, timing.Q_WB, timing.Q_WC),
            run=guarded(timing.check_qnotify_wake),
            estimated_duration_s=3.0,
        ),
        SemanticCheck(
            name="semantic_qnotify_immediate",
            section="§4 QNOTIFY",
            description="QNOTIFY returns at once when a registered queue has unclaimed work;"
            " claimed events and notifications of earlier pushes do not count",
            queues=(timing.Q_IA, timing.Q_IB),
            run=guarded(timing.check_qnotify_immediate),
            estimated_duration_s=1.5,
        ),
        SemanticCheck(
            name="semantic_qnotify_shuffle",
            section="§4 QNOTIFY",
            description=f"{sweep.SHUFFLE_TRIES} QNOTIFY 0 with several registered queues holding"
            " work name more than one of them (a freshly shuffled order each call), never an"
            " empty or all-claimed registered queue",
            queues=sweep.Q_SHUFFLE,
            run=guarded(sweep.check_qnotify_shuffle),
            estimated_duration_s=0.5,
        ),
        SemanticCheck(
            name="semantic_claim_hidden",
            section="§4 QRPOP",
            description="claimed events (EX 4, default 30 s) stay invisible to peeks and pops and"
            f" counted as processing for {timing.CLAIM_WATCH_S} s, their ids are duplicates"
            " until acked, and QACK replies :1 then :0",
            queues=(timing.Q_HIDDEN,),
            run=guarded(timing.check_claim_hidden),
            estimated_duration_s=timing.CLAIM_WATCH_S + 0.5,
        ),
        SemanticCheck(
            name="semantic_redelivery_quick",
            section="§6",
            description="if a QRPOP ... EX 1 claim comes back within"
            f" {sweep.QUICK_REDELIVERY_WINDOW_S} s (a short sweep), it was held 1 s and woke no"
            " waiting QNOTIFY (only the next QNOTIFY finds it)",
            queues=(sweep.Q_QUIET_QUICK,),
            run=guarded(sweep.check_redelivery_quick),
            estimated_duration_s=sweep.QUICK_REDELIVERY_WINDOW_S + 1.0,
        ),
    ]
    if slow:
        checks.append(
            SemanticCheck(
                name="semantic_redelivery_window",
                section="§6",
                description=f"a QRPOP ... EX {timing.REDELIVERY_EX_S} claim not acked comes back to"
                f" the right end no earlier than EX and within EX + {REDELIVERY_SLACK_S} s, waking"
                " no waiting QNOTIFY; acked, EX 0 and default-expiry (30 s) claims do not",
                queues=(timing.Q_REDELIVER, timing.Q_QUIET),
                run=guarded(timing.check_redelivery),
                slow=True,
                estimated_duration_s=timing.REDELIVERY_EX_S + 10.0,
            )
        )
        checks.append(
            SemanticCheck(
                name="semantic_sweep_batch",
                section="§10 restore sweep",
                description=f"the sweep looks at the {sweep.SWEEP_BATCH} oldest claims of a queue"
                f" only: {sweep.BATCH_BEHIND} expired EX 1 claims behind {sweep.SWEEP_BATCH}"
                " unexpired older ones stay claimed through a sweep that returns a later claim"
                " of another queue",
                queues=(sweep.Q_BATCH, sweep.Q_BATCH_CANARY),
                run=guarded(sweep.check_sweep_batch),
                slow=True,
                estimated_duration_s=1.0 + 10.0 + sweep.BATCH_CONFIRM_S,
            )
        )
    checks.extend(volume.checks())
    checks.extend(shapes.checks())
    return _isolate_timing(checks)


#: Checks that measure replies against tight time bounds ...
TIMING_CHECKS: Final = frozenset(
    {
        "semantic_noblock",
        "semantic_qnotify_timeout",
        "semantic_qnotify_wake",
        "semantic_qnotify_immediate",
        "semantic_consumer_counts",
    }
)
#: ... and checks that keep a server busy moving megabytes or hundreds of commands.
HEAVY_CHECKS: Final = frozenset(
    {
        "semantic_large_payloads",
        "semantic_pipelining_depth",
        "semantic_concurrent_consumers",
        "semantic_fifo_priority_many",
    }
)


def _isolate_timing(checks: list[SemanticCheck]) -> list[SemanticCheck]:
    """Keep the heavy checks from running at the same time as the timing checks.

    The runner never runs two checks that share a queue name at once.  Each (heavy, timing)
    pair gets a token name of its own (a queue nobody uses, only ``QFLUSH``ed) held by both:
    a heavy and a timing check then never overlap, while two timing checks (or two heavy
    ones) still may.  A server written in a slower language can stall for a quarter of a
    second on a 4 MiB request; that is a throughput matter, not a QNOTIFY timing error, and
    must not make ``QNOTIFY_LATE_S`` fail.
    """
    names = {c.name for c in checks}
    tokens: dict[str, list[bytes]] = {}
    for heavy in sorted(HEAVY_CHECKS & names):
        for timed in sorted(TIMING_CHECKS & names):
            token = PREFIX_TOKEN + f"{heavy[9:]}-{timed[9:]}".encode()
            tokens.setdefault(heavy, []).append(token)
            tokens.setdefault(timed, []).append(token)
    return [
        dataclasses.replace(c, queues=(*c.queues, *tokens[c.name])) if c.name in tokens else c
        for c in checks
    ]


#: Prefix of the token names `_isolate_timing` adds (never pushed to, only flushed).
PREFIX_TOKEN: Final = b"conformance-sem-token-"
