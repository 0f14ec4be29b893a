"""The WebSocket frame codec: round trips both ways, the fast publish path, and a
fuzzed decoder that only ever returns a frame or raises ``InvalidArgument``."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaymq.core.cursor import Delivery
from relaymq.core.message import Message
from relaymq.errors import InvalidArgument, StreamNotFound
from relaymq.protocol import frames

FUZZ_SETTINGS = settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

field_names = st.sampled_from(
    [
        "seq",
        "sub",
        "subscription",
        "credit",
        "batch",
        "messages",
        "receipts",
        "delay_ms",
        "extend_ms",
        "reason",
        "error",
        "stream",
        "encoding",
        "subject",
        "payload",
        "text",
    ]
)

frame_like = st.dictionaries(field_names, json_values, max_size=6).flatmap(
    lambda fields: st.sampled_from([*sorted(frames.CLIENT_OPS), "bogus", ""]).map(
        lambda op: {"op": op, **fields}
    )
)


def _decodes_or_invalid(decode, data) -> None:
    try:
        frame = decode(data)
    except InvalidArgument as error:
        assert error.code == "invalid_argument"
        frames.encode_text(frames.error_frame(error))  # every error is reportable
    else:
        assert type(frame).__struct_config__.tag in frames.CLIENT_OPS


@FUZZ_SETTINGS
@given(st.text(max_size=300))
def test_any_text_is_a_frame_or_invalid_argument(text: str) -> None:
    _decodes_or_invalid(frames.decode_text, text)


@FUZZ_SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes_are_a_frame_or_invalid_argument(data: bytes) -> None:
    _decodes_or_invalid(frames.decode_binary, data)
    _decodes_or_invalid(frames.decode_text, data)


@FUZZ_SETTINGS
@given(frame_like)
def test_frame_shaped_json_is_a_frame_or_invalid_argument(value: dict) -> None:
    _decodes_or_invalid(frames.decode_text, msgspec.json.encode(value))


@FUZZ_SETTINGS
@given(frame_like)
def test_frame_shaped_msgpack_is_a_frame_or_invalid_argument(value: dict) -> None:
    _decodes_or_invalid(frames.decode_binary, msgspec.msgpack.encode(value))


def test_deeply_nested_input_is_invalid_argument() -> None:
    nested = '{"op":"ping","extra":' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(InvalidArgument):
        frames.decode_text(nested)


def test_publish_decodes_in_both_encodings() -> None:
    value = {"op": "publish", "seq": 7, "messages": [{"subject": "a.b", "payload": b"\x00\xff"}]}
    from_msgpack = frames.decode_binary(msgspec.msgpack.encode(value))
    as_json = {**value, "messages": [{"subject": "a.b", "payload": "AP8=", "encoding": "base64"}]}
    from_json = frames.decode_text(msgspec.json.encode(as_json).decode())
    assert from_msgpack.messages[0].payload == from_json.messages[0].payload
    assert isinstance(from_json, frames.Publish)
    assert from_json.messages[0].payload == b"\x00\xff"


def test_unknown_op_names_the_op_and_seq() -> None:
    with pytest.raises(InvalidArgument) as caught:
        frames.decode_text('{"op":"explode","seq":12}')
    frame = frames.error_frame(caught.value)
    assert frame.seq == 12
    assert (frame.details["reason"], frame.details["op"]) == ("unknown_op", "explode")


def test_invalid_field_keeps_the_seq() -> None:
    with pytest.raises(InvalidArgument) as caught:
        frames.decode_text('{"op":"subscribe","seq":3,"sub":"s","subscription":"q","credit":-1}')
    assert frames.error_frame(caught.value).seq == 3


def test_text_payload_becomes_utf8_bytes() -> None:
    frame = frames.decode_text(
        '{"op":"publish","seq":1,"messages":[{"subject":"a","payload":"h\u00e9llo"}]}'
    )
    assert frames.to_message(frame.messages[0]).payload == "héllo".encode()


def test_base64_and_json_payloads_become_bytes() -> None:
    frame = frames.decode_text(
        '{"op":"publish","seq":1,"messages":[{"subject":"a","payload":"AP8=","encoding":"base64"},'
        '{"subject":"a","payload_json":{"n":1}}]}'
    )
    assert [published.payload for published in frame.messages] == [b"\x00\xff", b'{"n":1}']


@pytest.mark.parametrize(
    "message",
    [
        '{"subject":"a","payload":"!!","encoding":"base64"}',
        '{"subject":"a","payload":"x","payload_json":1}',
        '{"subject":"a","payload":5}',
    ],
)
def test_bad_payloads_are_invalid(message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        frames.decode_text('{"op":"publish","seq":9,"messages":[' + message + "]}")
    assert frames.error_frame(caught.value).seq == 9


def test_error_frame_maps_code_message_and_details() -> None:
    frame = frames.error_frame(StreamNotFound("no such stream", stream="s"), seq=4)
    decoded = msgspec.json.decode(frames.encode_text(frame))
    assert decoded == {
        "op": "error",
        "code": "stream_not_found",
        "message": "no such stream",
        "details": {"stream": "s"},
        "seq": 4,
    }


def _delivery(payload: bytes) -> object:
    message = Message(subject="a", payload=payload, partition=0, offset=5, timestamp_ms=9)
    return Delivery(message=message, receipt="r1", delivery_count=1, deadline_ms=10)


def test_deliver_frame_is_bin_in_msgpack() -> None:
    encoded = frames.encode_binary(frames.deliver_frame("s1", [_delivery(b"\xff")], "msgpack"))
    decoded = msgspec.msgpack.decode(encoded, type=frames.ServerFrame)
    assert isinstance(decoded, frames.Deliver)
    delivered = decoded.messages[0]
    assert (delivered.payload, delivered.encoding, delivered.receipt) == (b"\xff", None, "r1")
    assert delivered.id == "0-5"


def test_deliver_frame_is_text_or_base64_in_json() -> None:
    deliveries = [_delivery("hé".encode()), _delivery(b"\xff")]
    encoded = frames.encode_text(frames.deliver_frame("s1", deliveries, "json"))
    messages = msgspec.json.decode(encoded)["messages"]
    assert [(m["payload"], m["encoding"]) for m in messages] == [
        ("hé", "utf-8"),
        ("/w==", "base64"),
    ]


@given(st.text(max_size=64), st.integers(1, 300))
def test_frame_size_is_exact_whenever_it_decides(text: str, limit_bytes: int) -> None:
    exact = len(text.encode("utf-8", "surrogatepass"))
    size = frames.frame_size_bytes(text, limit_bytes)
    assert (size > limit_bytes) == (exact > limit_bytes)
    assert frames.frame_size_bytes(b"abc", 1) == 3


def test_sdk_publish_takes_the_fast_path_into_broker_messages() -> None:
    sent = frames.BinaryPublish(
        seq=3, messages=[frames.BinaryMessage(subject="a.b", payload=b"\x00", id="m1", key="k")]
    )
    decoded = frames.decode_binary(frames.encode_binary(sent))
    assert isinstance(decoded, frames.BinaryPublish)
    [message] = decoded.broker_messages()
    assert isinstance(message, Message)
    fields = (message.subject, message.payload, message.id, message.key)
    assert fields == ("a.b", b"\x00", "m1", "k")


@pytest.mark.parametrize(
    "message",
    [
        {"subject": "a", "payload": "text"},
        {"subject": "a", "payload": b"\x00", "encoding": "utf-8"},
        {"subject": "a", "payload_json": {"n": 1}},
        {"subject": "a", "payload": b"\x00", "future_field": 1},
    ],
)
def test_other_msgpack_publishes_take_the_general_path(message: dict) -> None:
    data = msgspec.msgpack.encode({"op": "publish", "seq": 1, "messages": [message]})
    decoded = frames.decode_binary(data)
    assert isinstance(decoded, frames.Publish)
    assert isinstance(decoded.broker_messages()[0].payload, bytes)


def test_fast_path_keeps_the_limits() -> None:
    bad = {"op": "publish", "seq": 1, "messages": [{"subject": "a", "deliver_at_ms": -1}]}
    with pytest.raises(InvalidArgument) as caught:
        frames.decode_binary(msgspec.msgpack.encode(bad))
    assert frames.error_frame(caught.value).seq == 1


def test_server_frames_round_trip_through_the_sdk_decoder() -> None:
    confirm = frames.confirm_frame(4, [frames.PublishResult(stream="s", partition=0, offset=9)])
    decoded = frames.decode_server_frame(frames.encode_binary(confirm))
    assert isinstance(decoded, frames.Confirm)
    assert decoded.results[0].offset == 9
    deliver = frames.deliver_frame("h", [_delivery(b"\x01")], "msgpack")
    decoded = frames.decode_server_frame(frames.encode_binary(deliver))
    assert isinstance(decoded, frames.Deliver)
    assert decoded.messages[0].payload == b"\x01"
    error = frames.decode_server_frame(frames.encode_text(frames.Error(code="x", message="y")))
    assert isinstance(error, frames.Error)
