"""The public API of okq_proto is its ``__all__``: pinned here so a change is deliberate."""

from __future__ import annotations

import inspect
import types

import okq_proto

PINNED = {
    # types and records
    "Event", "QueueStatus", "PushFlag", "Delivery", "PushOutcome", "Hooks", "IdFactory",
    "to_wire", "from_wire", "contents_bytes", "new_event_id",
    # errors
    "OkqError", "ProtocolError", "LocalProtocolError", "RemoteProtocolError", "ReplyError",
    "DuplicateEventError", "TooBusyError", "TransportError", "ConnectError", "TimeoutError",
    "ConnectionClosed", "ErrorReply", "is_dup", "reply_error",
    # codec
    "Reply", "Decoder", "Limits", "NeedData", "NEED_DATA", "encode_command",
    "encode_command_parts", "encode_commands", "make_decoder", "ReplyDecoder",
    # commands
    "Command", "QLPush", "QRPush", "QLPeek", "QRPeek", "QRPop", "QAck", "QRegister", "QNotify",
    "QFlush", "QStatus", "QInfo", "Ping", "push_command", "expire_argument", "DEFAULT_EXPIRE_S",
    "NO_ACK",
    # client machine and shared policies
    "ClientConnection", "CommandReplied", "ConnectionState", "Closed", "CLOSED",
    "Backoff", "parse_address", "parse_addresses", "DEFAULT_PORT", "ClientClosed",
}  # fmt: skip

#: What a driver decides, in okq_proto.policy (not in okq_proto's own namespace).
POLICY = {
    "may_retry", "retry_safe", "Failover", "read_time_left", "settle_retried_push",
    "is_transient", "check_client_options", "check_consume_options", "refuse_connection_state",
    "CONNECTION_FAILURES", "DEFAULT_RETRIES", "DEFAULT_POOL_TIMEOUT_S", "Backoff",
}  # fmt: skip


def test_all_contains_the_pinned_names() -> None:
    missing = PINNED - set(okq_proto.__all__)
    assert not missing, f"public names removed: {sorted(missing)}"


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in okq_proto.__all__:
        obj = getattr(okq_proto, name)
        # On 3.10 a typing alias such as ``Callable[[], str]`` passes isinstance(obj, type).
        if (isinstance(obj, type) and not isinstance(obj, types.GenericAlias)) or (
            inspect.isfunction(obj)
        ):
            assert getattr(obj, "__doc__", None), f"{name} has no docstring"


def test_no_io_modules_imported_by_the_core() -> None:
    import sys

    banned = {"socket", "asyncio", "trio", "threading", "select"}
    for name, module in list(sys.modules.items()):
        if name.startswith("okq_proto"):
            source = getattr(module, "__file__", "") or ""
            if source.endswith(".py"):
                with open(source, encoding="utf-8") as f:
                    text = f.read()
                for ban in banned:
                    assert f"\nimport {ban}\n" not in text, (name, ban)
                    assert f"\nfrom {ban} import" not in text, (name, ban)


def test_server_module_exports_the_server_role() -> None:
    import okq_proto.server

    pinned = {"ServerConnection", "CloseWithoutReply", "PeerClosed", "Dispatcher", "QueueEngine"}
    assert pinned <= set(okq_proto.server.__all__)
    for name in okq_proto.server.__all__:
        assert hasattr(okq_proto.server, name), name


def test_consumer_table_is_public() -> None:
    moves = okq_proto.CONSUMER_MOVES
    assert moves[okq_proto.ConsumerState.REGISTERING, okq_proto.ConsumerInput.REGISTERED]
    inputs = okq_proto.CONSUMER_PEER_INPUTS | okq_proto.CONSUMER_USER_INPUTS
    assert inputs == set(okq_proto.ConsumerInput)


def test_policy_module_holds_the_door_policy() -> None:
    import okq_proto.policy

    assert set(okq_proto.policy.__all__) >= POLICY
    for name in okq_proto.policy.__all__:
        assert hasattr(okq_proto.policy, name), name
    door_policy = POLICY - {"Backoff"}  # users pass a Backoff factory to consume()
    leaked = door_policy & set(okq_proto.__all__)
    assert not leaked, f"door policy in okq_proto's own namespace: {sorted(leaked)}"


#: The machines' contract as docs/sans-io.md documents it: verb -> its signature, the same
#: on every machine (the consumer's `step` needs `now`, a keyword others accept and ignore).
CONTRACT = {
    "receive_data": "(self, data: 'bytes | bytearray | memoryview') -> 'None'",
    "receive_eof": "(self) -> 'None'",
    "data_to_send": "(self) -> 'bytes'",
    "next_deadline": "(self) -> 'float | None'",
    "allowed_silence_s": "(self) -> 'float'",
}


def test_every_machine_keeps_the_contract() -> None:
    from okq_proto.server import ServerConnection

    assert {"Machine", "SendData"} <= set(okq_proto.__all__)
    for machine in (okq_proto.ClientConnection, okq_proto.Consumer, ServerConnection):
        for verb, signature in CONTRACT.items():
            got = str(inspect.signature(getattr(machine, verb)))
            assert got == signature, f"{machine.__name__}.{verb}{got}"
        step = inspect.signature(machine.step)
        assert list(step.parameters) == ["self", "now"], machine
        assert step.parameters["now"].default is None, machine
        assert str(step.return_annotation).startswith("SendData |"), machine
