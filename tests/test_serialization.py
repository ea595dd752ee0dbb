"""How the persistent stores write a message down (stores/serialization.py): a JSON header and
the body.  Whatever a message holds comes back from the bytes the same, and the header is
plain JSON that standard tools read."""

import json
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pybrokerd.broker.destination import Destination
from pybrokerd.broker.message import Float32, Int8, Int16, Int32, Message
from stores.serialization import decode, encode

text = st.text(max_size=12)  # any code point: quotes, backslashes, controls, non-ASCII
names = st.sampled_from(["queue", "topic", "temp-queue", "temp-topic"])
destinations = st.builds(Destination, names, text)
values = st.one_of(text, st.integers(-2 ** 63, 2 ** 63 - 1), st.booleans(), st.none(),
                   st.floats(allow_nan=False, allow_infinity=False), st.binary(max_size=8),
                   st.integers(-2 ** 31, 2 ** 31 - 1).map(Int32),
                   st.integers(-2 ** 15, 2 ** 15 - 1).map(Int16),
                   st.integers(-128, 127).map(Int8), st.floats(width=32).filter(
                       lambda f: f == f).map(Float32))
optional = st.one_of(st.none(), text)


@st.composite
def messages(draw):
    m = Message(draw(text), draw(destinations), draw(st.binary(max_size=64)),
                properties=draw(st.dictionaries(text, values, max_size=4)),
                persistent=draw(st.booleans()), priority=draw(st.integers(0, 9)),
                expires=draw(st.integers(0, 2 ** 62)), timestamp=draw(st.integers(0, 2 ** 62)),
                correlation_id=draw(optional), type=draw(optional),
                reply_to=draw(st.one_of(st.none(), destinations, text)),
                is_bytes=draw(st.booleans()), redelivery_count=draw(st.integers(0, 1000)),
                original_destination=draw(st.one_of(st.none(), destinations)),
                user_id=draw(optional), scheduled_job_id=draw(optional))
    if draw(st.booleans()):
        m.map_body = draw(st.dictionaries(text, values, max_size=3))
    m.jms_kind = draw(st.sampled_from([None, "message", "object", "stream"]))
    return m


FIELDS = ("message_id", "destination", "body", "properties", "persistent", "priority",
          "expires", "timestamp", "correlation_id", "type", "reply_to", "is_bytes",
          "redelivery_count", "original_destination", "user_id", "scheduled_job_id",
          "map_body", "jms_kind")


def _typed_equal(a, b):
    """Equal values of equal (Java) types: an Int32 does not come back a long."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _typed_equal(a[k], b[k]) for k in a)
    if isinstance(a, (bytes, bytearray)):
        return type(b) is bytes and bytes(a) == b
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(messages())
def test_a_message_comes_back_from_its_bytes_as_it_was(message):
    back = decode(encode(message))
    for name in FIELDS:
        assert _typed_equal(getattr(message, name), getattr(back, name)), name


@settings(max_examples=200, deadline=None)
@given(messages())
def test_the_header_is_one_json_object_and_the_body_follows_it(message):
    data = encode(message)
    (n,) = struct.unpack(">I", data[:4])
    header = json.loads(data[4:4 + n].decode("utf-8"))
    assert data[4 + n:] == message.body
    assert header["i"] == message.message_id
    assert header["d"] == list(message.destination)
    assert header["P"] is message.persistent and header["b"] is message.is_bytes
    assert (header["r"], header["e"], header["t"], header["n"]) == (
        message.priority, message.expires, message.timestamp, message.redelivery_count)
    assert ("c" in header) == (message.correlation_id is not None)
    assert ("o" in header) == (message.original_destination is not None)
