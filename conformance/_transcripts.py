"""Loading and validating okq wire transcripts (``conformance/transcripts/*.json``).

This module owns the transcript file format (described in
``conformance/transcripts/README.md``): it decodes every byte-string encoding
(plain UTF-8 text, ``_b64`` fields, ``_parts`` lists with ``{"b64"}`` and
``{"repeat", "count"}`` elements), checks that every step is well formed and
returns frozen ``Scenario``/``Step`` records. It opens no sockets and knows
nothing about how a scenario is replayed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "DEFAULT_STEP_TIMEOUT_S",
    "TRANSCRIPTS_DIR",
    "Scenario",
    "Step",
    "TranscriptError",
    "load_transcript",
    "load_transcripts",
    "parse_scenario",
]

#: The folder of recorded transcripts that ships with the suite.
TRANSCRIPTS_DIR: Final = Path(__file__).resolve().parent / "transcripts"
#: Per-step read timeout when a step gives none (README: "default 15").
DEFAULT_STEP_TIMEOUT_S: Final = 15.0

# Upper bound on a single decoded byte string (a `repeat` element could ask for more).
_MAX_BYTES: Final = 256 * 1024 * 1024

_TOP_KEYS: Final = frozenset(
    {
        "name",
        "description",
        "format_version",
        "requires_redis",
        "needs_empty_server",
        "queues",
        "connections",
        "steps",
    }
)
_BYTE_FIELDS: Final = ("send", "expect", "recorded")
_STEP_KEYS: Final = frozenset(
    {f + suffix for f in _BYTE_FIELDS for suffix in ("", "_b64", "_parts")}
    | {
        "conn",
        "redis",
        "sleep_before",
        "close",
        "expect_any_of",
        "expect_pattern",
        "elapsed_min",
        "elapsed_max",
        "recorded_elapsed",
        "expect_silence",
        "expect_close",
        "timeout",
        "note",
    }
)


class TranscriptError(ValueError):
    """A transcript file is unreadable or not a well-formed format-1 scenario."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One step of a scenario, with every byte string already decoded.

    ``conn`` is the client connection index, or ``None`` for a ``redis`` step.
    ``expect`` is the exact expected bytes (``b""`` means none), ``expect_any_of``
    a tuple of acceptable whole replies, ``expect_pattern`` a compiled regular
    expression (``re.S``) over one whole reply read as ISO-8859-1; at most one of
    the three is set. Times are in seconds.
    """

    index: int
    conn: int | None
    redis: bool = False
    sleep_before: float = 0.0
    close: bool = False
    send: bytes | None = None
    expect: bytes | None = None
    expect_any_of: tuple[bytes, ...] | None = None
    expect_pattern: re.Pattern[str] | None = None
    elapsed_min: float | None = None
    elapsed_max: float | None = None
    expect_silence: float | None = None
    expect_close: bool = False
    timeout: float = DEFAULT_STEP_TIMEOUT_S
    timeout_given: bool = False
    recorded: bytes | None = None
    recorded_elapsed: float | None = None
    note: str | None = None

    @property
    def reads(self) -> bool:
        """Whether the step reads anything (it has one of the ``expect*`` fields)."""
        return (
            self.expect is not None
            or self.expect_any_of is not None
            or self.expect_pattern is not None
        )

    @property
    def target(self) -> str:
        """Human-readable name of the connection the step uses (``conn 0``, ``redis``)."""
        return "redis" if self.redis else f"conn {self.conn}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One recorded scenario: the metadata of a transcript file plus its steps."""

    name: str
    description: str
    requires_redis: bool
    needs_empty_server: bool
    queues: tuple[bytes, ...]
    connections: int
    steps: tuple[Step, ...]
    path: Path | None = None

    @property
    def estimated_duration_s(self) -> float:
        """A lower bound of the replay time (sleeps, minimum waits, silences)."""
        total = 0.0
        for step in self.steps:
            total += step.sleep_before + (step.elapsed_min or 0.0) + (step.expect_silence or 0.0)
        return total


def _fail(where: str, message: str) -> TranscriptError:
    return TranscriptError(f"{where}: {message}")


def _decode_item(value: object, where: str) -> bytes:
    """Decode one byte string given as text, ``{"b64"}`` or ``{"repeat", "count"}``."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, Mapping):
        keys = set(value)
        if keys == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except binascii.Error as exc:
                raise _fail(where, f"invalid base64: {exc}") from exc
        if keys == {"repeat", "count"}:
            text, count = value["repeat"], value["count"]
            if not isinstance(text, str) or isinstance(count, bool) or not isinstance(count, int):
                raise _fail(where, "repeat must be a string and count an integer")
            unit = text.encode("utf-8")
            if count < 0 or len(unit) * count > _MAX_BYTES:
                raise _fail(where, f"repeat count {count} out of range")
            return unit * count
    raise _fail(where, f"not a byte string: {value!r:.80}")


def _decode_bytes_field(step: Mapping[str, object], field: str, where: str) -> bytes | None:
    """Decode ``field`` / ``field_b64`` / ``field_parts`` (at most one may be present)."""
    present = [k for k in (field, f"{field}_b64", f"{field}_parts") if k in step]
    if not present:
        return None
    if len(present) > 1:
        raise _fail(where, f"more than one of {present}")
    key = present[0]
    value = step[key]
    if key == field:
        if not isinstance(value, str):
            raise _fail(where, f"{key} must be a string")
        return value.encode("utf-8")
    if key.endswith("_b64"):
        if not isinstance(value, str):
            raise _fail(where, f"{key} must be a base64 string")
        return _decode_item({"b64": value}, f"{where}.{key}")
    if not isinstance(value, list):
        raise _fail(where, f"{key} must be a list")
    return b"".join(_decode_item(part, f"{where}.{key}[{i}]") for i, part in enumerate(value))


def _number(step: Mapping[str, object], key: str, where: str, *, positive: bool) -> float | None:
    value = step.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"{key} must be a number")
    if value < 0 or (positive and value == 0):
        raise _fail(where, f"{key} out of range: {value}")
    return float(value)


def _flag(step: Mapping[str, object], key: str, where: str) -> bool:
    value = step.get(key, False)
    if not isinstance(value, bool):
        raise _fail(where, f"{key} must be true or false")
    return value


def _parse_step(raw: object, index: int, where: str) -> Step:
    if not isinstance(raw, Mapping):
        raise _fail(where, "a step must be an object")
    unknown = set(raw) - _STEP_KEYS
    if unknown:
        raise _fail(where, f"unknown fields {sorted(unknown)}")
    redis = _flag(raw, "redis", where)
    raw_conn = raw.get("conn")
    conn: int | None = None
    if redis:
        if raw_conn is not None:
            raise _fail(where, "a redis step has no conn")
    elif isinstance(raw_conn, bool) or not isinstance(raw_conn, int) or raw_conn < 0:
        raise _fail(where, "conn must be a non-negative integer")
    else:
        conn = raw_conn
    close = _flag(raw, "close", where)
    send = _decode_bytes_field(raw, "send", where)
    expect = _decode_bytes_field(raw, "expect", where)
    recorded = _decode_bytes_field(raw, "recorded", where)
    any_of: tuple[bytes, ...] | None = None
    if "expect_any_of" in raw:
        items = raw["expect_any_of"]
        if not isinstance(items, list) or not items:
            raise _fail(where, "expect_any_of must be a non-empty list")
        any_of = tuple(
            _decode_item(item, f"{where}.expect_any_of[{i}]") for i, item in enumerate(items)
        )
    pattern: re.Pattern[str] | None = None
    if "expect_pattern" in raw:
        text = raw["expect_pattern"]
        if not isinstance(text, str):
            raise _fail(where, "expect_pattern must be a string")
        try:
            pattern = re.compile(text, re.S)
        except re.error as exc:
            raise _fail(where, f"bad expect_pattern: {exc}") from exc
    note = raw.get("note")
    if note is not None and not isinstance(note, str):
        raise _fail(where, "note must be a string")
    timeout = _number(raw, "timeout", where, positive=True)
    step = Step(
        index=index,
        conn=conn,
        redis=redis,
        sleep_before=_number(raw, "sleep_before", where, positive=False) or 0.0,
        close=close,
        send=send,
        expect=expect,
        expect_any_of=any_of,
        expect_pattern=pattern,
        elapsed_min=_number(raw, "elapsed_min", where, positive=False),
        elapsed_max=_number(raw, "elapsed_max", where, positive=False),
        expect_silence=_number(raw, "expect_silence", where, positive=True),
        expect_close=_flag(raw, "expect_close", where),
        timeout=DEFAULT_STEP_TIMEOUT_S if timeout is None else timeout,
        timeout_given=timeout is not None,
        recorded=recorded,
        recorded_elapsed=_number(raw, "recorded_elapsed", where, positive=False),
        note=note,
    )
    _check_step(step, where)
    return step


def _check_step(step: Step, where: str) -> None:
    """Reject combinations of fields that have no meaning in the format."""
    forms = [step.expect is not None, step.expect_any_of is not None, step.expect_pattern]
    if sum(1 for f in forms if f) > 1:
        raise _fail(where, "at most one of expect, expect_any_of, expect_pattern")
    if step.close and (step.send is not None or step.reads or step.redis):
        raise _fail(where, "a close step neither sends nor reads")
    if not step.reads and (
        step.elapsed_min is not None
        or step.elapsed_max is not None
        or step.expect_silence is not None
        or step.expect_close
    ):
        raise _fail(where, "elapsed_*, expect_silence and expect_close need an expect field")
    if step.expect_close and step.expect_silence is not None:
        raise _fail(where, "expect_close and expect_silence exclude each other")
    if step.expect == b"" and not (step.expect_close or step.expect_silence is not None):
        raise _fail(where, 'expect "" must come with expect_silence or expect_close')
    if (
        step.elapsed_min is not None
        and step.elapsed_max is not None
        and step.elapsed_min > step.elapsed_max
    ):
        raise _fail(where, "elapsed_min is larger than elapsed_max")
    if step.redis and step.expect_close:
        raise _fail(where, "expect_close is not meaningful on the redis connection")
    if not (step.close or step.send is not None or step.reads or step.sleep_before):
        raise _fail(where, "the step does nothing")


def _str_field(data: Mapping[str, object], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _fail(where, f"{key} must be a string")
    return value


def parse_scenario(
    data: object, *, source: str = "<transcript>", path: Path | None = None
) -> Scenario:
    """Validate a decoded transcript JSON document and build a ``Scenario``.

    Args:
        data: the result of ``json.load`` on a transcript file.
        source: how to name the document in error messages.
        path: the file it came from, if any; its stem must equal the scenario name.

    Returns:
        The scenario, with every byte string decoded and every step checked.

    Raises:
        TranscriptError: a field is missing, unknown, of the wrong type, or the
            steps are inconsistent (e.g. a connection used after it was closed).
    """
    if not isinstance(data, Mapping):
        raise _fail(source, "the document must be a JSON object")
    missing = _TOP_KEYS - set(data)
    unknown = set(data) - _TOP_KEYS
    if missing or unknown:
        raise _fail(source, f"missing fields {sorted(missing)}, unknown fields {sorted(unknown)}")
    name = _str_field(data, "name", source)
    if path is not None and path.stem != name:
        raise _fail(source, f"name {name!r} differs from the file name")
    if data["format_version"] != 1:
        raise _fail(source, f"unsupported format_version {data['format_version']!r}")
    requires_redis = _flag(data, "requires_redis", source)
    needs_empty = _flag(data, "needs_empty_server", source)
    raw_queues = data["queues"]
    if not isinstance(raw_queues, list):
        raise _fail(source, "queues must be a list")
    queues = tuple(_decode_item(q, f"{source}.queues[{i}]") for i, q in enumerate(raw_queues))
    connections = data["connections"]
    if isinstance(connections, bool) or not isinstance(connections, int) or connections < 0:
        raise _fail(source, "connections must be a non-negative integer")
    raw_steps = data["steps"]
    if not isinstance(raw_steps, list) or not raw_steps:
        raise _fail(source, "steps must be a non-empty list")
    steps = tuple(_parse_step(s, i, f"{source} step {i}") for i, s in enumerate(raw_steps))
    closed: set[int] = set()
    for step in steps:
        if step.redis and not requires_redis:
            raise _fail(source, f"step {step.index} talks to redis but requires_redis is false")
        if step.conn is not None:
            if step.conn in closed:
                raise _fail(source, f"step {step.index} uses conn {step.conn} after closing it")
            if step.close:
                closed.add(step.conn)
    used = {s.conn for s in steps if s.conn is not None}
    if used and max(used) + 1 > connections:
        raise _fail(source, f"steps use conn {max(used)} but connections is {connections}")
    return Scenario(
        name=name,
        description=_str_field(data, "description", source),
        requires_redis=requires_redis,
        needs_empty_server=needs_empty,
        queues=queues,
        connections=connections,
        steps=steps,
        path=path,
    )


def load_transcript(path: str | Path) -> Scenario:
    """Load and validate one transcript file.

    Args:
        path: the ``.json`` file.

    Returns:
        The scenario it records.

    Raises:
        TranscriptError: the file cannot be read, is not JSON, or is malformed.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TranscriptError(f"{file}: cannot load: {exc}") from exc
    return parse_scenario(data, source=file.name, path=file)


def load_transcripts(path: str | Path | None = None) -> list[Scenario]:
    """Load every transcript in a folder (or one file), sorted by name.

    Args:
        path: a folder of ``*.json`` transcripts or a single file; by default the
            transcripts that ship with the suite (``TRANSCRIPTS_DIR``).

    Returns:
        The scenarios, sorted by name.

    Raises:
        TranscriptError: a file is malformed, two files share a name, or the
            folder holds no transcript.
    """
    where = TRANSCRIPTS_DIR if path is None else Path(path)
    if where.is_file():
        return [load_transcript(where)]
    files: Sequence[Path] = sorted(where.glob("*.json"))
    if not files:
        raise TranscriptError(f"{where}: no *.json transcripts found")
    scenarios = [load_transcript(f) for f in files]
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        raise TranscriptError(f"{where}: duplicate scenario names")
    return sorted(scenarios, key=lambda s: s.name)
