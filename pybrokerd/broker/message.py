"""The one message value that travels from a listener to the store and back."""

from __future__ import annotations

import itertools
import os
import socket
import time

from pybrokerd.broker.destination import Destination

DEFAULT_PRIORITY = 4


def now_ms() -> int:
    return int(time.time() * 1000)


class IdGenerator:
    """ActiveMQ-shaped ids ("ID:host-pid-start-0:N"), unique across restarts and brokers."""

    def __init__(self):
        host = socket.gethostname().split(".")[0] or "localhost"
        self.prefix = "ID:%s-%d-%d-%s" % (host, os.getpid(), now_ms(), os.urandom(2).hex())
        self._connections = itertools.count(1)

    def connection_id(self) -> str:
        return "%s:%d" % (self.prefix, next(self._connections))


class Int32(int):
    """A map message value that is a Java int (rendered `int`), where a plain Python int is a
    Java long (rendered `long`)."""

    __slots__ = ()


class Int16(int):
    """A Java short (OpenWire properties and map values keep their Java types)."""
    __slots__ = ()


class Int8(int):
    """A Java byte."""
    __slots__ = ()


class Float32(float):
    """A Java float (a plain Python float is a Java double)."""
    __slots__ = ()


class Char(str):
    """A Java char."""
    __slots__ = ()


# the Java types a typed value may have besides str, bool, int (long) and float (double):
# name <-> class, as the stores write them
JAVA_TYPES = {"int": Int32, "short": Int16, "byte": Int8, "float": Float32, "char": Char}
JAVA_TYPE_NAMES = {cls: name for name, cls in JAVA_TYPES.items()}


def java_text(value) -> str:
    """A typed value as Java's toString writes it (what ActiveMQ puts in a STOMP header):
    true/false, 2.5, 1.0E20, a float32 in its shortest form."""
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        if isinstance(value, Float32):
            import struct
            packed = struct.pack(">f", value)
            for digits in range(1, 10):
                text = "%.*g" % (digits, value)
                try:
                    if struct.pack(">f", float(text)) == packed:
                        value = float(text)
                        break
                except OverflowError:
                    continue  # rounded past the largest float32 (near 3.4028235E38)
        if value == 0 or 1e-3 <= abs(value) < 1e7:
            return repr(float(value))
        import decimal
        exact = decimal.Decimal(repr(float(value)))
        exponent = exact.adjusted()
        mantissa = str(exact.scaleb(-exponent).normalize())
        if "." not in mantissa:
            mantissa += ".0"
        return "%sE%d" % (mantissa, int(exponent))
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


class Message:
    """A message as the broker keeps it.

    ``properties`` holds every user header (strings, as STOMP sends them); the standard JMS
    header fields are attributes.  ``reply_to`` is a Destination when it named one we know,
    else the raw string the producer sent.  ``is_bytes`` remembers whether the producer sent a
    content-length (ActiveMQ's BytesMessage), which decides whether MESSAGE frames carry one.
    """

    __slots__ = ("message_id", "destination", "properties", "body", "persistent", "priority",
                 "expires", "timestamp", "correlation_id", "reply_to", "type", "is_bytes",
                 "redelivery_count", "original_destination", "user_id", "group_id", "group_seq",
                 "scheduled_job_id", "producer_seq", "seq", "map_body", "wire", "jms_kind",
                 "data_structure")

    def __init__(self, message_id: str, destination: Destination, body: bytes = b"", *,
                 properties: dict | None = None, persistent: bool = False,
                 priority: int = DEFAULT_PRIORITY, expires: int = 0, timestamp: int | None = None,
                 correlation_id: str | None = None, reply_to=None, type: str | None = None,
                 is_bytes: bool = False, redelivery_count: int = 0,
                 original_destination: Destination | None = None, user_id: str | None = None,
                 scheduled_job_id: str | None = None):
        self.message_id = message_id
        self.destination = destination
        self.body = body
        self.properties = properties if properties is not None else {}
        self.persistent = persistent
        self.priority = priority
        self.expires = expires
        self.timestamp = now_ms() if timestamp is None else timestamp
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.type = type
        self.is_bytes = is_bytes
        self.redelivery_count = redelivery_count
        self.original_destination = original_destination
        self.user_id = user_id
        self.scheduled_job_id = scheduled_job_id
        if properties:
            self.group_id = properties.get("JMSXGroupID")
            seq = properties.get("JMSXGroupSeq")
            try:
                self.group_seq = int(seq) if seq is not None else 0
            except ValueError:
                self.group_seq = 0
        else:
            self.group_id = None
            self.group_seq = 0
        self.producer_seq = None
        self.seq = 0  # arrival order in its destination, set by the broker
        # A map message (JMS MapMessage) made by the broker itself, e.g. a statistics reply:
        # {name: value}, rendered per subscription by the protocol (STOMP: its `transformation`
        # header); `body` is then unused.  Never stored: such messages are non-persistent.
        self.map_body: dict | None = None
        # a protocol's encoding of the parts of this message every subscriber gets alike
        # (STOMP: the header lines around `subscription`/`ack`, and the body): encoded once
        # for a topic's many subscribers.  Keyed by the protocol's own key; never stored.
        self.wire = None
        # the JMS message class when neither is_bytes nor map_body tells it: "message" (no
        # body), "object" or "stream" (a Java-serialized body in `body`); set by OpenWire
        self.jms_kind: str | None = None
        # an OpenWire data structure an advisory message carries (never stored)
        self.data_structure = None

    def copy(self, **changes) -> "Message":
        clone = Message.__new__(Message)
        for name in Message.__slots__:
            setattr(clone, name, getattr(self, name))
        clone.properties = dict(self.properties)
        clone.wire = None
        for name, value in changes.items():
            setattr(clone, name, value)
        return clone

    @property
    def size(self) -> int:
        return len(self.body) + 200

    def is_expired(self, now: int | None = None) -> bool:
        return self.expires > 0 and (now if now is not None else now_ms()) >= self.expires

    def selector_value(self, name: str):
        """The value a JMS selector sees for an identifier."""
        if name.startswith("JMS"):
            standard = _STANDARD.get(name)
            if standard is not None:
                return standard(self)
        return self.properties.get(name)

    def __repr__(self) -> str:
        return "<Message %s to %s, %d bytes>" % (self.message_id, self.destination, len(self.body))


_STANDARD = {
    "JMSMessageID": lambda m: m.message_id,
    "JMSPriority": lambda m: m.priority,
    "JMSTimestamp": lambda m: m.timestamp,
    "JMSCorrelationID": lambda m: m.correlation_id,
    "JMSType": lambda m: m.type,
    "JMSDeliveryMode": lambda m: "PERSISTENT" if m.persistent else "NON_PERSISTENT",
    "JMSExpiration": lambda m: m.expires,
    "JMSRedelivered": lambda m: m.redelivery_count > 0,
    "JMSXDeliveryCount": lambda m: m.redelivery_count + 1,
    "JMSXGroupID": lambda m: m.group_id,
    "JMSXGroupSeq": lambda m: m.group_seq,
    "JMSXUserID": lambda m: m.user_id,
    # ActiveMQDestination.toString() (queue://a, temp-queue://ID:...), and the destination it
    # was first sent to (a DLQ'd message's, a virtual topic copy's), as ActiveMQ's selectors
    "JMSDestination": lambda m: (m.original_destination or m.destination).activemq(),
    "JMSReplyTo": lambda m: m.reply_to.activemq() if isinstance(m.reply_to, Destination) else m.reply_to,
}
