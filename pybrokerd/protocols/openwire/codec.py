"""OpenWire, ActiveMQ's binary protocol: a sans-I/O codec (bytes in, commands out, and back).

Version 12 (activemq-client 5.17's), loose encoding only: we answer a client's
WireFormatInfo with TightEncodingEnabled, CacheEnabled and SizePrefixDisabled all false, and
the client, which ANDs both sides' flags, then writes loose, uncached, size-prefixed frames
(docs/openwire.md).  Every frame is `int32 size` + `type byte` + the fields of that type in the
order of SCHEMA below; a field is one of the KINDS.  No Twisted here.
"""

from __future__ import annotations

import struct

from pybrokerd.broker.message import Char as JavaChar
from pybrokerd.broker.message import Float32 as JavaFloat
from pybrokerd.broker.message import Int8 as JavaByte
from pybrokerd.broker.message import Int16 as JavaShort
from pybrokerd.broker.message import Int32 as JavaInt

MAGIC = b"ActiveMQ"
VERSION = 12


class OpenWireError(ValueError):
    """Bytes that are not OpenWire we understand: the connection is closed (a framing error)."""


# -- modified UTF-8 (Java's DataOutput.writeUTF) ---------------------------------------------
def decode_mutf8(data) -> str:
    data = bytes(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        text = data.replace(b"\xc0\x80", b"\x00").decode("utf-8", "surrogatepass")
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeError as e:
        raise OpenWireError("a string is not modified UTF-8: %s" % e) from None


def encode_mutf8(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    if len(data) == len(text) and "\x00" not in text:
        return data  # ASCII without NUL: the same bytes
    out = bytearray()
    units = text.encode("utf-16-be", "surrogatepass")
    for (c,) in struct.iter_unpack(">H", units):
        if 0 < c < 0x80:
            out.append(c)
        elif c < 0x800:
            out += bytes((0xC0 | (c >> 6), 0x80 | (c & 0x3F)))
        else:
            out += bytes((0xE0 | (c >> 12), 0x80 | ((c >> 6) & 0x3F), 0x80 | (c & 0x3F)))
    return bytes(out)


# -- the commands -------------------------------------------------------------------------
class Struct:
    """One OpenWire data structure; subclasses are made from SCHEMA (see `TYPES`)."""

    __slots__ = ()
    TYPE = 0
    FIELDS: tuple = ()

    def __init__(self, **values):
        for name, kind in self.FIELDS:
            setattr(self, name, _DEFAULTS[kind])
        for name, value in values.items():
            setattr(self, name, value)

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, n) == getattr(other, n) for n, _ in self.FIELDS)

    def __hash__(self):
        return hash((self.TYPE,) + tuple(
            getattr(self, n) for n, k in self.FIELDS if k in ("string", "long", "int")))

    def __repr__(self):
        shown = ", ".join("%s=%r" % (n, getattr(self, n)) for n, _ in self.FIELDS
                          if getattr(self, n) not in (None, False, 0, b"") or n == "commandId")
        return "%s(%s)" % (type(self).__name__, shown)


_DEFAULTS = {"byte": 0, "bool": False, "short": 0, "int": 0, "long": 0, "string": None,
             "nested": None, "bytes": None, "array": None, "throwable": None, "magic": MAGIC}

BC = (("commandId", "int"), ("responseRequired", "bool"))
DEST = ("physicalName", "string"),
_MESSAGE = BC + (
    ("producerId", "nested"), ("destination", "nested"), ("transactionId", "nested"),
    ("originalDestination", "nested"), ("messageId", "nested"),
    ("originalTransactionId", "nested"), ("groupID", "string"), ("groupSequence", "int"),
    ("correlationId", "string"), ("persistent", "bool"), ("expiration", "long"),
    ("priority", "byte"), ("replyTo", "nested"), ("timestamp", "long"), ("type", "string"),
    ("content", "bytes"), ("marshalledProperties", "bytes"), ("dataStructure", "nested"),
    ("targetConsumerId", "nested"), ("compressed", "bool"), ("redeliveryCounter", "int"),
    ("brokerPath", "array"), ("arrival", "long"), ("userID", "string"),
    ("recievedByDFBridge", "bool"), ("droppable", "bool"), ("cluster", "array"),
    ("brokerInTime", "long"), ("brokerOutTime", "long"),
    ("jmsXGroupFirstForConsumer", "bool"))
_RESPONSE = BC + (("correlationId", "int"),)

SCHEMA = {
    1: ("WireFormatInfo", (("magic", "magic"), ("version", "int"),
                           ("marshalledProperties", "bytes"))),
    2: ("BrokerInfo", BC + (
        ("brokerId", "nested"), ("brokerURL", "string"), ("peerBrokerInfos", "array"),
        ("brokerName", "string"), ("slaveBroker", "bool"), ("masterBroker", "bool"),
        ("faultTolerantConfiguration", "bool"), ("duplexConnection", "bool"),
        ("networkConnection", "bool"), ("connectionId", "long"), ("brokerUploadUrl", "string"),
        ("networkProperties", "string"))),
    3: ("ConnectionInfo", BC + (
        ("connectionId", "nested"), ("clientId", "string"), ("password", "string"),
        ("userName", "string"), ("brokerPath", "array"), ("brokerMasterConnector", "bool"),
        ("manageable", "bool"), ("clientMaster", "bool"), ("faultTolerant", "bool"),
        ("failoverReconnect", "bool"), ("clientIp", "string"))),
    4: ("SessionInfo", BC + (("sessionId", "nested"),)),
    5: ("ConsumerInfo", BC + (
        ("consumerId", "nested"), ("browser", "bool"), ("destination", "nested"),
        ("prefetchSize", "int"), ("maximumPendingMessageLimit", "int"),
        ("dispatchAsync", "bool"), ("selector", "string"), ("clientId", "string"),
        ("subscriptionName", "string"), ("noLocal", "bool"), ("exclusive", "bool"),
        ("retroactive", "bool"), ("priority", "byte"), ("brokerPath", "array"),
        ("additionalPredicate", "nested"), ("networkSubscription", "bool"),
        ("optimizedAcknowledge", "bool"), ("noRangeAcks", "bool"),
        ("networkConsumerPath", "array"))),
    6: ("ProducerInfo", BC + (
        ("producerId", "nested"), ("destination", "nested"), ("brokerPath", "array"),
        ("dispatchAsync", "bool"), ("windowSize", "int"))),
    7: ("TransactionInfo", BC + (
        ("connectionId", "nested"), ("transactionId", "nested"), ("type", "byte"))),
    8: ("DestinationInfo", BC + (
        ("connectionId", "nested"), ("destination", "nested"), ("operationType", "byte"),
        ("timeout", "long"), ("brokerPath", "array"))),
    9: ("RemoveSubscriptionInfo", BC + (
        ("connectionId", "nested"), ("subcriptionName", "string"), ("clientId", "string"))),
    10: ("KeepAliveInfo", BC),
    11: ("ShutdownInfo", BC),
    12: ("RemoveInfo", BC + (("objectId", "nested"), ("lastDeliveredSequenceId", "long"))),
    14: ("ControlCommand", BC + (("command", "string"),)),
    15: ("FlushCommand", BC),
    16: ("ConnectionError", BC + (("exception", "throwable"), ("connectionId", "nested"))),
    17: ("ConsumerControl", BC + (
        ("destination", "nested"), ("close", "bool"), ("consumerId", "nested"),
        ("prefetch", "int"), ("flush", "bool"), ("start", "bool"), ("stop", "bool"))),
    18: ("ConnectionControl", BC + (
        ("close", "bool"), ("exit", "bool"), ("faultTolerant", "bool"), ("resume", "bool"),
        ("suspend", "bool"), ("connectedBrokers", "string"), ("reconnectTo", "string"),
        ("rebalanceConnection", "bool"), ("token", "bytes"))),
    19: ("ProducerAck", BC + (("producerId", "nested"), ("size", "int"))),
    20: ("MessagePull", BC + (
        ("consumerId", "nested"), ("destination", "nested"), ("timeout", "long"),
        ("correlationId", "string"), ("messageId", "nested"))),
    21: ("MessageDispatch", BC + (
        ("consumerId", "nested"), ("destination", "nested"), ("message", "nested"),
        ("redeliveryCounter", "int"))),
    22: ("MessageAck", BC + (
        ("destination", "nested"), ("transactionId", "nested"), ("consumerId", "nested"),
        ("ackType", "byte"), ("firstMessageId", "nested"), ("lastMessageId", "nested"),
        ("messageCount", "int"), ("poisonCause", "throwable"))),
    23: ("ActiveMQMessage", _MESSAGE),
    24: ("ActiveMQBytesMessage", _MESSAGE),
    25: ("ActiveMQMapMessage", _MESSAGE),
    26: ("ActiveMQObjectMessage", _MESSAGE),
    27: ("ActiveMQStreamMessage", _MESSAGE),
    28: ("ActiveMQTextMessage", _MESSAGE),
    29: ("ActiveMQBlobMessage", _MESSAGE + (
        ("remoteBlobUrl", "string"), ("mimeType", "string"), ("deletedByBroker", "bool"))),
    30: ("Response", _RESPONSE),
    31: ("ExceptionResponse", _RESPONSE + (("exception", "throwable"),)),
    32: ("DataResponse", _RESPONSE + (("data", "nested"),)),
    33: ("DataArrayResponse", _RESPONSE + (("data", "array"),)),
    34: ("IntegerResponse", _RESPONSE + (("result", "int"),)),
    55: ("SubscriptionInfo", (
        ("clientId", "string"), ("destination", "nested"), ("selector", "string"),
        ("subcriptionName", "string"), ("subscribedDestination", "nested"),
        ("noLocal", "bool"))),
    90: ("MessageDispatchNotification", BC + (
        ("consumerId", "nested"), ("destination", "nested"), ("deliverySequenceId", "long"),
        ("messageId", "nested"))),
    91: ("NetworkBridgeFilter", (
        ("networkBrokerId", "nested"), ("messageTTL", "int"), ("consumerTTL", "int"))),
    92: ("BrokerSubscriptionInfo", BC + (
        ("brokerId", "nested"), ("brokerName", "string"), ("subscriptionInfos", "array"))),
    100: ("ActiveMQQueue", DEST),
    101: ("ActiveMQTopic", DEST),
    102: ("ActiveMQTempQueue", DEST),
    103: ("ActiveMQTempTopic", DEST),
    110: ("MessageId", (("textView", "string"), ("producerId", "nested"),
                       ("producerSequenceId", "long"), ("brokerSequenceId", "long"))),
    111: ("LocalTransactionId", (("value", "long"), ("connectionId", "nested"))),
    112: ("XATransactionId", (("formatId", "int"), ("globalTransactionId", "bytes"),
                             ("branchQualifier", "bytes"))),
    120: ("ConnectionId", (("value", "string"),)),
    121: ("SessionId", (("connectionId", "string"), ("value", "long"))),
    122: ("ConsumerId", (("connectionId", "string"), ("sessionId", "long"), ("value", "long"))),
    123: ("ProducerId", (("connectionId", "string"), ("value", "long"), ("sessionId", "long"))),
    124: ("BrokerId", (("value", "string"),)),
}

TYPES: dict[int, type] = {}
for _type, (_name, _fields) in SCHEMA.items():
    TYPES[_type] = type(_name, (Struct,), {
        "__slots__": tuple(n for n, _ in _fields), "TYPE": _type, "FIELDS": _fields})
globals().update({cls.__name__: cls for cls in TYPES.values()})

MESSAGE_TYPES = frozenset(range(23, 30))
DESTINATION_TYPES = frozenset(range(100, 104))


class Throwable:
    """An exception as OpenWire carries it: a Java class name and a message."""

    __slots__ = ("class_name", "message")

    def __init__(self, class_name: str, message: str | None):
        self.class_name = class_name
        self.message = message

    def __eq__(self, other):
        return isinstance(other, Throwable) and (self.class_name, self.message) == (
            other.class_name, other.message)

    def __repr__(self):
        return "Throwable(%r, %r)" % (self.class_name, self.message)


# -- reading --------------------------------------------------------------------------------
class _Reader:
    __slots__ = ("data", "pos", "stack_traces")

    def __init__(self, data, stack_traces=False):
        self.data = data
        self.pos = 0
        self.stack_traces = stack_traces

    def take(self, n: int):
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise OpenWireError("a frame ends in the middle of a field")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def unpack(self, fmt: struct.Struct):
        end = self.pos + fmt.size
        if end > len(self.data):
            raise OpenWireError("a frame ends in the middle of a field")
        value = fmt.unpack_from(self.data, self.pos)[0]
        self.pos = end
        return value

    def bool(self) -> bool:
        return self.unpack(_B) != 0

    def string(self):
        if not self.bool():
            return None
        return decode_mutf8(self.take(self.unpack(_H)))

    def object(self, depth=0):
        if not self.bool():
            return None
        return self.fields_of(self.unpack(_B), depth)

    def fields_of(self, type_byte: int, depth=0):
        cls = TYPES.get(type_byte)
        if cls is None:
            raise OpenWireError("unknown OpenWire data type %d" % type_byte)
        if depth > 8:
            raise OpenWireError("data structures nested too deep")
        obj = cls.__new__(cls)
        for name, read in cls.READERS:
            setattr(obj, name, read(self, depth))
        return obj

    def read(self, kind: str, depth: int):
        return _READ[kind](self, depth)

    def read_other(self, kind: str, depth: int):
        """The field kinds without a reader function of their own."""
        if kind == "bytes":
            if not self.bool():
                return None
            return bytes(self.take(self.unpack(_I)))
        if kind == "array":
            if not self.bool():
                return None
            return [self.object(depth + 1) for _ in range(self.unpack(_H))]
        if kind == "throwable":
            return self.throwable(depth)
        if kind == "magic":
            magic = bytes(self.take(8))
            if magic != MAGIC:
                raise OpenWireError("not OpenWire: the WireFormatInfo magic is %r" % magic)
            return magic
        raise AssertionError(kind)

    def throwable(self, depth):
        if not self.bool():
            return None
        error = Throwable(self.string(), self.string())
        if self.stack_traces:
            for _ in range(self.unpack(_H)):
                self.string(), self.string(), self.string(), self.unpack(_I)
            if depth < 8:
                self.throwable(depth + 1)  # the cause: dropped
        return error


_B, _b, _H, _h = struct.Struct(">B"), struct.Struct(">b"), struct.Struct(">H"), struct.Struct(">h")
_I, _Q = struct.Struct(">i"), struct.Struct(">q")


# one reader function per field kind, looked up once per type (not per field, per frame)
def _fixed(fmt: struct.Struct):
    size, unpack_from = fmt.size, fmt.unpack_from

    def read(reader, depth):
        pos = reader.pos
        end = pos + size
        if end > len(reader.data):
            raise OpenWireError("a frame ends in the middle of a field")
        reader.pos = end
        return unpack_from(reader.data, pos)[0]
    return read


def _read_bool(reader, depth):
    pos = reader.pos
    if pos >= len(reader.data):
        raise OpenWireError("a frame ends in the middle of a field")
    reader.pos = pos + 1
    return reader.data[pos] != 0


_READ = {"bool": _read_bool, "long": _fixed(_Q), "int": _fixed(_I), "byte": _fixed(_b),
         "short": _fixed(_h), "string": lambda reader, depth: reader.string(),
         "nested": lambda reader, depth: reader.object(depth + 1)}
for _kind in ("bytes", "array", "throwable", "magic"):
    _READ[_kind] = (lambda kind: lambda reader, depth: reader.read_other(kind, depth))(_kind)
for _cls in TYPES.values():
    _cls.READERS = tuple((name, _READ[kind]) for name, kind in _cls.FIELDS)


class Decoder:
    """Feed it bytes; it returns the whole commands they complete.

    `max_frame_size` bounds what one frame may announce (the connection is refused before
    anything that large is buffered)."""

    def __init__(self, max_frame_size: int = 100 * 1024 * 1024):
        self.max_frame_size = max_frame_size
        self.stack_traces = False
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list:
        self.buffer += data
        commands = []
        buffer = self.buffer
        pos = 0
        while len(buffer) - pos >= 4:
            size = _I.unpack_from(buffer, pos)[0]
            if size <= 0:
                raise OpenWireError("a frame size of %d bytes" % size)
            if size > self.max_frame_size:
                raise OpenWireError("a frame of %d bytes is larger than the limit of %d bytes"
                                    % (size, self.max_frame_size))
            if len(buffer) - pos - 4 < size:
                break
            frame = memoryview(buffer)[pos + 4:pos + 4 + size]
            try:
                commands.append(decode_frame(frame, self.stack_traces))
            finally:
                frame.release()
            pos += 4 + size
        if pos:
            del buffer[:pos]
        return commands


def decode_frame(frame, stack_traces=False):
    """One frame without its size prefix -> a Struct (None for the NULL type)."""
    reader = _Reader(frame, stack_traces)
    type_byte = reader.unpack(_B)
    if type_byte == 0:
        return None
    obj = reader.fields_of(type_byte)
    if reader.pos != len(frame):
        raise OpenWireError("%d bytes left over after a %s" % (len(frame) - reader.pos,
                                                             type(obj).__name__))
    return obj


# -- writing --------------------------------------------------------------------------------
def encode(obj, stack_traces=False) -> bytes:
    """A command -> one size-prefixed loose-encoded frame; OpenWireError for a value that
    does not fit its field."""
    out = bytearray(b"\0\0\0\0")
    out.append(obj.TYPE)
    _fitting(_write_fields, out, obj, stack_traces)
    _I.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def encode_nested(obj) -> bytes:
    """A data structure as a nested field (presence byte, type, fields): to splice."""
    out = bytearray()
    _fitting(_write_object, out, obj, False)
    return bytes(out)


def _fitting(write, *args) -> None:
    """Run a writer; a value that does not fit its field (a string over 64 KiB, an int
    over 32 bits) is an OpenWireError, the codec's only exception."""
    try:
        write(*args)
    except (struct.error, OverflowError, TypeError, ValueError) as e:
        raise OpenWireError("a value does not fit its OpenWire field: %s" % e) from None


_DISPATCH_HEAD = struct.Struct(">iBiB")  # size, type 21, commandId 0, responseRequired 0


def dispatch_frame(consumer_id: bytes, destination: bytes, message: bytes,
                   redelivery_counter: int) -> bytes:
    """A MessageDispatch frame from its fields already encoded by encode_nested (a message
    is encoded once, however many consumers it goes to)."""
    size = 1 + 4 + 1 + len(consumer_id) + len(destination) + len(message) + 4
    return b"".join((_DISPATCH_HEAD.pack(size, 21, 0, 0), consumer_id, destination, message,
                     _I.pack(redelivery_counter)))


def _write_fields(out: bytearray, obj, stack_traces: bool) -> None:
    for name, kind in obj.FIELDS:
        value = getattr(obj, name)
        if kind == "bool":
            out.append(1 if value else 0)
        elif kind == "long":
            out += _Q.pack(value or 0)
        elif kind == "int":
            out += _I.pack(value or 0)
        elif kind == "string":
            _write_string(out, value)
        elif kind == "nested":
            _write_object(out, value, stack_traces)
        elif kind == "byte":
            out += _b.pack(value or 0)
        elif kind == "bytes":
            if value is None:
                out.append(0)
            else:
                out.append(1)
                out += _I.pack(len(value))
                out += value
        elif kind == "array":
            if value is None:
                out.append(0)
            else:
                out.append(1)
                out += _H.pack(len(value))
                for item in value:
                    _write_object(out, item, stack_traces)
        elif kind == "throwable":
            if value is None:
                out.append(0)
            else:
                out.append(1)
                _write_string(out, value.class_name)
                _write_string(out, value.message)
                if stack_traces:
                    out += _H.pack(0)  # no stack: a broker's frames say nothing to a client
                    out.append(0)      # and no cause
        elif kind == "short":
            out += _h.pack(value or 0)
        elif kind == "magic":
            out += MAGIC
        else:
            raise AssertionError(kind)


def _write_string(out: bytearray, value) -> None:
    if value is None:
        out.append(0)
        return
    data = encode_mutf8(value)
    if len(data) > 0xFFFF:
        raise OpenWireError("a string of %d bytes is too long for OpenWire" % len(data))
    out.append(1)
    out += _H.pack(len(data))
    out += data


def _write_object(out: bytearray, value, stack_traces: bool) -> None:
    if value is None:
        out.append(0)
        return
    out.append(1)
    out.append(value.TYPE)
    _write_fields(out, value, stack_traces)


# -- primitive maps (message properties, map message bodies, WireFormatInfo options) -------
# Java's types beyond str, bool, int (long), float (double), bytes: the broker's own classes
NULL, BOOLEAN, BYTE, CHAR, SHORT, INTEGER, LONG, DOUBLE, FLOAT, STRING, BYTE_ARRAY, MAP, \
    LIST, BIG_STRING = range(14)
_d, _f = struct.Struct(">d"), struct.Struct(">f")


def decode_map(data) -> dict:
    reader = _Reader(memoryview(data))
    result = _read_map(reader, 0)
    return {} if result is None else result


def _read_map(reader, depth):
    count = reader.unpack(_I)
    if count < 0:
        return None
    if count > 1_000_000:
        raise OpenWireError("a map of %d entries" % count)
    result = {}
    for _ in range(count):
        key = decode_mutf8(reader.take(reader.unpack(_H)))
        result[key] = _read_value(reader, depth)
    return result


def _read_value(reader, depth):
    if depth > 16:
        raise OpenWireError("map values nested too deep")
    code = reader.unpack(_B)
    if code == NULL:
        return None
    if code == BOOLEAN:
        return reader.bool()
    if code == BYTE:
        return JavaByte(reader.unpack(_b))
    if code == CHAR:
        return JavaChar(chr(reader.unpack(_H)))
    if code == SHORT:
        return JavaShort(reader.unpack(_h))
    if code == INTEGER:
        return JavaInt(reader.unpack(_I))
    if code == LONG:
        return reader.unpack(_Q)
    if code == DOUBLE:
        return reader.unpack(_d)
    if code == FLOAT:
        return JavaFloat(reader.unpack(_f))
    if code == STRING:
        return decode_mutf8(reader.take(reader.unpack(_H)))
    if code == BYTE_ARRAY:
        return bytes(reader.take(reader.unpack(_I)))
    if code == MAP:
        return _read_map(reader, depth + 1)
    if code == LIST:
        count = reader.unpack(_I)
        if count < 0 or count > 1_000_000:
            raise OpenWireError("a list of %d entries" % count)
        return [_read_value(reader, depth + 1) for _ in range(count)]
    if code == BIG_STRING:
        length = reader.unpack(_I)
        return None if length < 0 else decode_mutf8(reader.take(length))
    raise OpenWireError("unknown primitive type %d in a map" % code)


def encode_map(values: dict) -> bytes:
    out = bytearray()
    _fitting(_write_map, out, values)
    return bytes(out)


def _write_map(out: bytearray, values: dict) -> None:
    out += _I.pack(len(values))
    for key, value in values.items():
        key = encode_mutf8(str(key))
        out += _H.pack(len(key))
        out += key
        _write_value(out, value)


def _write_value(out: bytearray, value) -> None:
    if value is None:
        out.append(NULL)
    elif isinstance(value, bool):
        out.append(BOOLEAN)
        out.append(1 if value else 0)
    elif isinstance(value, JavaByte):
        out.append(BYTE)
        out += _b.pack(value)
    elif isinstance(value, JavaShort):
        out.append(SHORT)
        out += _h.pack(value)
    elif isinstance(value, JavaInt):
        out.append(INTEGER)
        out += _I.pack(value)
    elif isinstance(value, int):
        if -(1 << 63) <= value < (1 << 63):
            out.append(LONG)
            out += _Q.pack(value)
        else:
            _write_value(out, str(value))
    elif isinstance(value, JavaFloat):
        out.append(FLOAT)
        out += _f.pack(value)
    elif isinstance(value, float):
        out.append(DOUBLE)
        out += _d.pack(value)
    elif isinstance(value, JavaChar):
        out.append(CHAR)
        out += _H.pack(ord(value) & 0xFFFF)
    elif isinstance(value, str):
        data = encode_mutf8(value)
        if len(value) < 8191:
            out.append(STRING)
            out += _H.pack(len(data))
        else:
            out.append(BIG_STRING)
            out += _I.pack(len(data))
        out += data
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out.append(BYTE_ARRAY)
        out += _I.pack(len(value))
        out += value
    elif isinstance(value, dict):
        out.append(MAP)
        _write_map(out, value)
    elif isinstance(value, (list, tuple)):
        out.append(LIST)
        out += _I.pack(len(value))
        for item in value:
            _write_value(out, item)
    else:
        _write_value(out, str(value))


def decode_text(data) -> str | None:
    """A TextMessage's content: int32 length + modified UTF-8 (-1: null)."""
    reader = _Reader(memoryview(data))
    length = reader.unpack(_I)
    if length < 0:
        return None
    return decode_mutf8(reader.take(length))


def encode_text(text: str) -> bytes:
    data = encode_mutf8(text)
    return _I.pack(len(data)) + data
