"""okq_proto.hiredis: the reply decoder on hiredis-py, for code that picks its decoder itself.

Owns: the public name of `HiredisDecoder`, the `okq_proto.Decoder` API (`feed`, `next_reply`,
`has_partial`, `limits`) with the pure decoder's rules and limits, on ``hiredis.Reader``, and its
two tuning constants (`HOLD_COUNT`, `FAST_MAX`).
Must not know: okq commands, sockets, clocks.  Importing this module imports hiredis (an
optional dependency: ``pip install okq[hiredis]``) and raises ImportError without it;
``okq_proto.make_decoder()`` picks this decoder by itself when hiredis is installed.  The
implementation lives in ``okq_proto._hiredis`` (on ``okq_proto._framer`` and
``okq_proto._hiredis_trust``); import it from here.
"""

from ._hiredis import FAST_MAX, HOLD_COUNT, HiredisDecoder

__all__ = ["FAST_MAX", "HOLD_COUNT", "HiredisDecoder"]
