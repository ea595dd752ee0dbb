"""The OpenWire codec (pybrokerd/protocols/openwire/codec.py) without a socket: properties
with hypothesis (round trips, any split of the bytes, garbage) and fixed bytes from the
specification.  bench/fuzz.py runs the same properties at high example counts."""

from __future__ import annotations

import math
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pybrokerd.protocols.openwire import codec
from pybrokerd.protocols.openwire.codec import OpenWireError

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
VALUES = {
    "byte": st.integers(-128, 127),
    "bool": st.booleans(),
    "short": st.integers(-2 ** 15, 2 ** 15 - 1),
    "int": st.integers(-2 ** 31, 2 ** 31 - 1),
    "long": st.integers(-2 ** 63, 2 ** 63 - 1),
    "string": st.none() | TEXT,
    "bytes": st.none() | st.binary(max_size=40),
    "throwable": st.none() | st.builds(codec.Throwable, TEXT, st.none() | TEXT),
    "magic": st.just(codec.MAGIC),
}


def structs(depth=0):
    """Any OpenWire data structure, nested at most two deep."""
    def build(type_byte):
        cls = codec.TYPES[type_byte]
        fields = {}
        for name, kind in cls.FIELDS:
            if kind == "nested":
                fields[name] = st.none() if depth >= 2 else st.none() | st.deferred(
                    lambda: structs(depth + 1))
            elif kind == "array":
                fields[name] = st.none() if depth >= 2 else st.none() | st.lists(
                    st.deferred(lambda: structs(depth + 1)), max_size=2)
            else:
                fields[name] = VALUES[kind]
        return st.fixed_dictionaries(fields).map(lambda values: cls(**values))
    return st.sampled_from(sorted(codec.TYPES)).flatmap(build)


JAVA_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 63 - 1) | TEXT |
    st.binary(max_size=20) | st.floats(allow_nan=False) |
    st.integers(-2 ** 31, 2 ** 31 - 1).map(codec.JavaInt) |
    st.integers(-2 ** 15, 2 ** 15 - 1).map(codec.JavaShort) |
    st.integers(-128, 127).map(codec.JavaByte) |
    st.floats(width=32, allow_nan=False).map(codec.JavaFloat) |
    st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",)).map(codec.JavaChar),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8)


def same(a, b) -> bool:
    """Equal, and of the same Java type, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


@settings(max_examples=300, deadline=None)
@given(structs())
def test_encode_then_decode_gives_the_command_back(command):
    [decoded] = codec.Decoder().feed(codec.encode(command))
    assert decoded == command


@settings(max_examples=150, deadline=None)
@given(st.lists(structs(), min_size=1, max_size=4), st.lists(st.integers(0, 10 ** 5), max_size=8))
def test_any_split_of_the_bytes_gives_the_same_commands(commands, cuts):
    data = b"".join(codec.encode(c) for c in commands)
    points = sorted({c % (len(data) + 1) for c in cuts})
    decoder = codec.Decoder()
    got = []
    last = 0
    for p in points + [len(data)]:
        got.extend(decoder.feed(data[last:p]))
        last = p
    assert got == commands


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_raises_only_the_protocol_error(data):
    decoder = codec.Decoder(max_frame_size=1 << 20)
    try:
        decoder.feed(data)
    except OpenWireError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_inside_a_well_formed_frame_raises_only_the_protocol_error(body):
    for type_byte in (1, 3, 5, 21, 22, 28, 110):
        frame = struct.pack(">i", len(body) + 1) + bytes([type_byte]) + body
        try:
            codec.Decoder().feed(frame)
        except OpenWireError:
            pass
    try:
        codec.decode_map(body)
    except OpenWireError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(TEXT, JAVA_VALUES, max_size=6))
def test_primitive_maps_round_trip_with_their_java_types(values):
    assert same(codec.decode_map(codec.encode_map(values)), values)


@given(TEXT)
def test_text_bodies_round_trip(text):
    assert codec.decode_text(codec.encode_text(text)) == text


def test_modified_utf8_as_java_writes_it():
    # NUL is two bytes, a character outside the BMP is two 3-byte surrogates (Java's writeUTF)
    assert codec.encode_mutf8("a\x00") == b"a\xc0\x80"
    assert codec.encode_mutf8("\U0001F600") == b"\xed\xa0\xbd\xed\xb8\x80"
    assert codec.decode_mutf8(b"\xed\xa0\xbd\xed\xb8\x80\xc0\x80") == "\U0001F600\x00"


def test_the_wire_format_info_bytes():
    """The bytes of ActiveMQ's WireFormatInfo: size, type 1, "ActiveMQ", version, options."""
    data = codec.encode(codec.WireFormatInfo(version=12, marshalledProperties=codec.encode_map(
        {"CacheEnabled": False})))
    assert data[4:5] == b"\x01" and data[5:13] == b"ActiveMQ"
    assert data[13:17] == b"\x00\x00\x00\x0c"
    assert data[17:18] == b"\x01"  # the options are there
    options = data[22:]
    assert options == b"\x00\x00\x00\x01\x00\x0cCacheEnabled\x01\x00"
    assert struct.unpack(">i", data[:4])[0] == len(data) - 4


def test_a_frame_larger_than_the_limit_is_refused_before_it_is_read():
    decoder = codec.Decoder(max_frame_size=1000)
    try:
        decoder.feed(struct.pack(">i", 1001) + b"\x01")
    except OpenWireError as e:
        assert "1001" in str(e) and "1000" in str(e)
    else:
        raise AssertionError("not refused")


def test_typed_properties_read_as_java_writes_them_in_stomp_headers():
    from pybrokerd.broker.message import Float32, java_text
    assert [java_text(v) for v in (True, False, 7, 2.5, 1e20, 123456789.0, Float32(0.1),
                                   -2.5e-7, "text")] == \
        ["true", "false", "7", "2.5", "1.0E20", "1.23456789E8", "0.1", "-2.5E-7", "text"]
    # floats near Float.MAX_VALUE, whose shorter roundings overflow a float32 (it raised)
    assert [java_text(Float32(v)) for v in (3.4028234663852886e38, 3.4025001647762064e38,
                                            -3.4028234663852886e38)] == \
        ["3.4028235E38", "3.4025002E38", "-3.4028235E38"]


def test_a_compressed_body_may_not_inflate_without_bound():
    import zlib
    from pybrokerd.broker.destination import Destination
    from pybrokerd.protocols.openwire import mapping
    bomb = zlib.compress(b"\0" * (4 << 20))
    small = zlib.compress(b"\0" * 1000)
    assert mapping._inflate(small, False, limit=1 << 20) == b"\0" * 1000
    try:
        mapping._inflate(bomb, False, limit=1 << 20)
    except OpenWireError as e:
        assert "more than" in str(e)
    else:
        raise AssertionError("inflated past the limit")
    message = codec.ActiveMQBytesMessage(
        compressed=True, content=struct.pack(">i", 1000) + small,
        messageId=codec.MessageId(textView="m1"))
    assert mapping.to_broker(message, Destination("queue", "q")).body == b"\0" * 1000


def test_composite_names_are_bounded_and_without_repeats():
    from pybrokerd.broker.destination import DestinationError
    from pybrokerd.protocols.openwire import mapping
    found = mapping.destinations(codec.ActiveMQQueue(physicalName="a,b,a,topic://t"))
    assert [(d.kind, d.name) for d in found] == [("queue", "a"), ("queue", "b"), ("topic", "t")]
    try:
        mapping.destinations(codec.ActiveMQQueue(physicalName=",".join(["q"] * 5000)))
    except DestinationError as e:
        assert "at most" in str(e)
    else:
        raise AssertionError("not refused")


@settings(max_examples=100, deadline=None)
@given(structs(), st.integers(-2 ** 31, 2 ** 31 - 1))
def test_a_spliced_dispatch_is_the_dispatch_encoded_whole(message, redeliveries):
    consumer = codec.ConsumerId(connectionId="ID:c:1", sessionId=1, value=2)
    destination = codec.ActiveMQQueue(physicalName="q")
    whole = codec.encode(codec.MessageDispatch(consumerId=consumer, destination=destination,
                                               message=message,
                                               redeliveryCounter=redeliveries))
    spliced = codec.dispatch_frame(codec.encode_nested(consumer), codec.encode_nested(destination),
                                   codec.encode_nested(message), redeliveries)
    assert spliced == whole
