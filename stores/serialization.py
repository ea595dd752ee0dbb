"""Message <-> bytes for the persistent stores.

Layout: u32 length of a JSON header, the header, then the body as raw bytes.  JSON keeps the
format readable with standard tools and stable across Python versions (no pickle).
"""

import json
import struct

from pybrokerd.broker.destination import Destination
from pybrokerd.broker.message import Message

_LEN = struct.Struct(">I")


def _dest(value):
    if isinstance(value, Destination):
        return [value.kind, value.name]
    return value


def _undest(value):
    if isinstance(value, list):
        return Destination(value[0], value[1])
    return value


def encode(message: Message) -> bytes:
    header = {
        "i": message.message_id, "d": _dest(message.destination), "p": message.properties,
        "P": message.persistent, "r": message.priority, "e": message.expires,
        "t": message.timestamp, "b": message.is_bytes, "n": message.redelivery_count,
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
    if message.map_body is not None:  # an AMQP map body (JSON keeps its plain values)
        header["m"] = {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                       for k, v in message.map_body.items()}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return b"".join((_LEN.pack(len(raw)), raw, message.body))


def decode(data) -> Message:
    data = memoryview(data)
    (n,) = _LEN.unpack_from(data, 0)
    h = json.loads(bytes(data[4:4 + n]))
    message = Message(
        h["i"], _undest(h["d"]), bytes(data[4 + n:]), properties=h["p"], persistent=h["P"],
        priority=h["r"], expires=h["e"], timestamp=h["t"], correlation_id=h.get("c"),
        reply_to=_undest(h.get("R")), type=h.get("y"), is_bytes=h["b"],
        redelivery_count=h["n"], original_destination=_undest(h.get("o")),
        user_id=h.get("u"), scheduled_job_id=h.get("j"))
    message.map_body = h.get("m")
    return message
