"""Message <-> bytes for the persistent stores.

Layout: u32 length of a JSON header, the header, then the body as raw bytes.  JSON keeps the
format readable with standard tools and stable across Python versions (no pickle).
"""

import json
import struct

from pybrokerd.broker.destination import Destination
from pybrokerd.broker.message import JAVA_TYPE_NAMES, JAVA_TYPES, Message

_LEN = struct.Struct(">I")
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    # CPython's C encoder, made once: JSONEncoder.encode makes a new one on every call, which
    # is more than half of the time it takes for a message header (4.2 -> 1.8 us).  A header
    # holds only what JSON takes as it is (str, int, float, bool, None, list, dict).
    _c_encode = _c_make_encoder(None, _encoder.default, json.encoder.c_encode_basestring,
                                None, ":", ",", False, False, True)

    def _json(value) -> str:
        return "".join(_c_encode(value, 0))
else:
    _json = _encoder.encode


_scan = json.JSONDecoder().scan_once


def _load(text: str):
    """The JSON value that is all of `text` (json.loads without its per-call set-up)."""
    try:
        value, end = _scan(text, 0)
    except StopIteration as e:
        raise ValueError("a stored message header is not JSON (at %d)" % e.value) from None
    if end != len(text):
        raise ValueError("a stored message header has data after its JSON (at %d)" % end)
    return value


def _dest(value):
    if isinstance(value, Destination):
        return [value.kind, value.name]
    return value


def _undest(value):
    if isinstance(value, list):
        return Destination(value[0], value[1])
    return value


def _typed(values: dict):
    """(JSON-able values, {name: Java type} for those JSON would lose) of a property or map
    dict: Java int/short/byte/float/char (OpenWire) and byte arrays keep their type."""
    types = {}
    plain = values
    for key, value in values.items():
        kind = JAVA_TYPE_NAMES.get(type(value))
        if kind is None and isinstance(value, (bytes, bytearray)):
            kind = "bytes"
        if kind is not None:
            if plain is values:
                plain = dict(values)
            types[key] = kind
            if kind == "bytes":
                plain[key] = bytes(value).hex()
        elif not isinstance(value, (str, int, float, bool, type(None))):
            if plain is values:
                plain = dict(values)
            plain[key] = str(value)
    return plain, types


def _untyped(values: dict, types: dict | None) -> dict:
    if types:
        for key, kind in types.items():
            if key in values:
                value = values[key]
                values[key] = bytes.fromhex(value) if kind == "bytes" else JAVA_TYPES[kind](value)
    return values


_string = json.encoder.c_encode_basestring or json.encoder.py_encode_basestring
_BOOL = {True: "true", False: "false"}


_dest_json: dict = {}  # Destination -> its JSON ("[kind,name]"), made once (writer thread)


def encode(message: Message) -> bytes:
    properties, property_types = _typed(message.properties) if message.properties else ({}, {})
    destination = message.destination
    priority, expires, timestamp = message.priority, message.expires, message.timestamp
    count = message.redelivery_count
    if (type(destination) is Destination and type(priority) is int and type(expires) is int
            and type(timestamp) is int and type(count) is int):
        # the fields every message has, formatted directly (what _json would write for
        # these types, in a third of the time); the rest goes through _json below
        where = _dest_json.get(destination)
        if where is None:
            if len(_dest_json) >= 4096:
                _dest_json.clear()  # many destinations: stay bounded
            where = _dest_json[destination] = "[%s,%s]" % (
                _string(destination.kind), _string(destination.name))
        head = '{"i":%s,"d":%s,"p":%s,"P":%s,"r":%d,"e":%d,"t":%d,"b":%s,"n":%d' % (
            _string(message.message_id), where,
            _json(properties) if properties else "{}", _BOOL[bool(message.persistent)],
            priority, expires, timestamp, _BOOL[bool(message.is_bytes)], count)
        if (message.correlation_id is None and message.type is None
                and message.user_id is None and message.scheduled_job_id is None
                and message.reply_to is None and message.original_destination is None
                and not property_types and message.map_body is None
                and message.jms_kind is None):  # nothing optional: the usual message
            raw = (head + "}").encode("utf-8")
            return b"".join((_LEN.pack(len(raw)), raw, message.body))
        header = {}
    else:
        head = None
        header = {
            "i": message.message_id, "d": _dest(destination), "p": properties,
            "P": message.persistent, "r": priority, "e": expires, "t": timestamp,
            "b": message.is_bytes, "n": count,
        }
    for key, attr in (("c", "correlation_id"), ("y", "type"), ("u", "user_id"),
                      ("j", "scheduled_job_id")):
        value = getattr(message, attr)
        if value is not None:
            header[key] = value
    if message.reply_to is not None:
        header["R"] = _dest(message.reply_to)
    if message.original_destination is not None:
        header["o"] = _dest(message.original_destination)
    if property_types:
        header["pt"] = property_types
    if message.map_body is not None:  # a map message's body (AMQP, OpenWire)
        header["m"], map_types = _typed(message.map_body)
        if map_types:
            header["mt"] = map_types
    if message.jms_kind is not None:
        header["k"] = message.jms_kind
    if head is None:
        text = _json(header)
    elif header:
        text = head + "," + _json(header)[1:]
    else:
        text = head + "}"
    raw = text.encode("utf-8")
    return b"".join((_LEN.pack(len(raw)), raw, message.body))


_destinations: dict = {}


def _destination(value) -> Destination:
    """The Destination of a stored [kind, name], shared by the messages read back (a dict
    lookup is cheaper than making the named tuple; decode runs in pool threads, which is
    fine for a dict)."""
    if type(value) is not list:
        return value
    key = (value[0], value[1])
    found = _destinations.get(key)
    if found is None:
        if len(_destinations) >= 4096:
            _destinations.clear()  # many destinations: stay bounded
        found = _destinations[key] = Destination(value[0], value[1])
    return found


_FIXED = 9  # header fields every message has (see encode)


def decode(data) -> Message:
    data = memoryview(data)
    (n,) = _LEN.unpack_from(data, 0)
    h = _load(str(data[4:4 + n], "utf-8"))
    if len(h) == _FIXED:  # nothing optional: the common case
        return Message(h["i"], _destination(h["d"]), bytes(data[4 + n:]), properties=h["p"],
                       persistent=h["P"], priority=h["r"], expires=h["e"], timestamp=h["t"],
                       is_bytes=h["b"], redelivery_count=h["n"])
    message = Message(
        h["i"], _destination(h["d"]), bytes(data[4 + n:]),
        properties=_untyped(h["p"], h.get("pt")), persistent=h["P"],
        priority=h["r"], expires=h["e"], timestamp=h["t"], correlation_id=h.get("c"),
        reply_to=_undest(h.get("R")), type=h.get("y"), is_bytes=h["b"],
        redelivery_count=h["n"], original_destination=_undest(h.get("o")),
        user_id=h.get("u"), scheduled_job_id=h.get("j"))
    map_body = h.get("m")
    message.map_body = None if map_body is None else _untyped(map_body, h.get("mt"))
    message.jms_kind = h.get("k")
    return message
