"""AMQP 1.0 messages and addresses <-> the broker's Message and Destination (docs/amqp.md).

Pure functions over proton's codec objects (proton.Message is an encoder/decoder; no I/O).
"""

from __future__ import annotations

import uuid

from proton import Message as AmqpMessage
from proton import byte, char, float32, int32, short, symbol, ulong

from pybrokerd.broker.destination import (
    QUEUE, TEMP_QUEUE, TEMP_TOPIC, TOPIC, Destination, DestinationError)
from pybrokerd.broker.message import DEFAULT_PRIORITY, Char, Float32, Int8, Int16, Int32, \
    Message, now_ms

# ActiveMQ's (and qpid-jms's) address prefixes; a bare name is a queue
PREFIXES = (("queue://", QUEUE), ("topic://", TOPIC), ("temp-queue://", TEMP_QUEUE),
            ("temp-topic://", TEMP_TOPIC))
# qpid-jms marks the JMS type of a message in this message annotation
JMS_MSG_TYPE = symbol("x-opt-jms-msg-type")
JMS_MESSAGE, JMS_MAP, JMS_BYTES, JMS_TEXT = 0, 2, 3, 5
# JMS delivery delay (AMQP JMS mapping): an alternative to AMQ_SCHEDULED_DELAY
DELIVERY_DELAY = symbol("x-opt-delivery-delay")
DELIVERY_TIME = symbol("x-opt-delivery-time")
_NOT_PROPERTIES = {"JMSXGroupID", "JMSXGroupSeq"}


def parse_address(address: str | None) -> Destination:
    if not address:
        raise DestinationError("An address is required")
    for prefix, kind in PREFIXES:
        if address.startswith(prefix):
            name = address[len(prefix):]
            if not name:
                raise DestinationError("Empty destination name in address %r" % address)
            return Destination(kind, name)
    if "://" in address:
        raise DestinationError("Unknown address prefix in %r: use queue://, topic://, "
                               "temp-queue:// or temp-topic://, or a bare queue name" % address)
    return Destination(QUEUE, address)


def render_address(dest) -> str:
    if isinstance(dest, Destination):
        return dest.activemq()
    return str(dest)


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


# ActiveMQ's AMQPMessageIdHelper: an AMQP message or correlation id of any type as a JMS string
_ID_PREFIXES = (("ID:AMQP_UUID:", uuid.UUID), ("ID:AMQP_ULONG:", lambda t: ulong(int(t))),
                ("ID:AMQP_BINARY:", bytes.fromhex), ("ID:AMQP_NO_PREFIX:", str),
                ("ID:AMQP_STRING:", str))


def id_to_text(value, correlation: bool = False) -> str | None:
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return "ID:AMQP_UUID:%s" % value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "ID:AMQP_BINARY:%s" % bytes(value).hex().upper()
    if isinstance(value, int):
        return "ID:AMQP_ULONG:%d" % value
    text = str(value)
    if text.startswith("ID:"):
        if text.startswith(tuple(p for p, _ in _ID_PREFIXES)):
            return "ID:AMQP_STRING:" + text  # a string that only looks like an encoded id
        return text
    # a plain string: a message id gets ActiveMQ's marker; a correlation id is the
    # application's own value and stays as it is
    return text if correlation else "ID:AMQP_NO_PREFIX:" + text


def id_from_text(text: str | None):
    if text is None:
        return None
    for prefix, convert in _ID_PREFIXES:
        if text.startswith(prefix):
            try:
                return convert(text[len(prefix):])
            except ValueError:
                return text
    return text


def _property(value):
    """Application property values: numbers and strings keep their type (selectors compare
    them as such); booleans become ActiveMQ's "true"/"false" (what STOMP shows anyway)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return value
    return _text(value)


def to_broker(amqp: AmqpMessage, message_id: str, destination: Destination,
              resolve_reply_to) -> Message:
    body = amqp.body
    map_body = None
    if body is None:
        data, is_bytes = b"", False
    elif isinstance(body, str):
        data, is_bytes = body.encode("utf-8"), False
    elif isinstance(body, (bytes, bytearray, memoryview)):
        data, is_bytes = bytes(body), True
    elif isinstance(body, dict):
        map_body = {str(k): v for k, v in body.items()}
        data, is_bytes = b"", False
    else:
        data, is_bytes = repr(body).encode("utf-8"), False
    properties = {str(k): _property(v) for k, v in (amqp.properties or {}).items()}
    annotations = amqp.annotations or {}
    if "AMQ_SCHEDULED_DELAY" not in properties:
        delay = annotations.get(DELIVERY_DELAY)
        when = annotations.get(DELIVERY_TIME)
        if delay is not None and int(delay) > 0:
            properties["AMQ_SCHEDULED_DELAY"] = int(delay)
        elif when is not None and int(when) > now_ms():
            properties["AMQ_SCHEDULED_DELAY"] = int(when) - now_ms()
    if amqp.group_id is not None:
        properties["JMSXGroupID"] = str(amqp.group_id)
        if amqp.group_sequence:
            properties["JMSXGroupSeq"] = int(amqp.group_sequence)
    timestamp = int(amqp.creation_time * 1000) if amqp.creation_time else None
    expires = 0
    if amqp.expiry_time:
        expires = int(amqp.expiry_time * 1000)
    elif amqp.ttl:
        expires = now_ms() + int(amqp.ttl * 1000)
    priority = amqp.priority if amqp.priority is not None else DEFAULT_PRIORITY
    message = Message(
        id_to_text(amqp.id) or message_id, destination, data, properties=properties, persistent=bool(amqp.durable),
        priority=min(max(int(priority), 0), 9), expires=expires, timestamp=timestamp,
        correlation_id=id_to_text(amqp.correlation_id, correlation=True),
        reply_to=resolve_reply_to(amqp.reply_to) if amqp.reply_to else None,
        type=amqp.subject, is_bytes=is_bytes,
        user_id=_text(amqp.user_id) or None)
    message.map_body = map_body
    if map_body is not None:
        message.body = repr(map_body).encode("utf-8")  # for size accounting and old readers
    return message


def to_amqp(message: Message) -> AmqpMessage:
    amqp = AmqpMessage()
    amqp.id = id_from_text(message.message_id)
    amqp.durable = message.persistent
    amqp.priority = message.priority
    amqp.address = render_address(message.destination)
    if message.expires:
        amqp.expiry_time = message.expires / 1000.0
        amqp.ttl = max(message.expires - now_ms(), 1) / 1000.0
    amqp.creation_time = message.timestamp / 1000.0
    if message.correlation_id is not None:
        amqp.correlation_id = id_from_text(message.correlation_id)
    if message.reply_to is not None:
        amqp.reply_to = render_address(message.reply_to)
    if message.type is not None:
        amqp.subject = message.type
    if message.user_id:
        amqp.user_id = message.user_id.encode("utf-8")
    if message.group_id is not None:
        amqp.group_id = message.group_id
        if message.group_seq:
            amqp.group_sequence = message.group_seq
    amqp.delivery_count = message.redelivery_count
    amqp.first_acquirer = message.redelivery_count == 0
    properties = {k: _amqp_value(v) for k, v in message.properties.items()
                  if k not in _NOT_PROPERTIES}
    if message.scheduled_job_id is not None:
        properties.setdefault("scheduledJobId", message.scheduled_job_id)
    if message.original_destination is not None:
        properties.setdefault("originalDestination", render_address(message.original_destination))
    amqp.properties = properties
    if message.map_body is not None:
        amqp.body = {k: _amqp_value(v) for k, v in message.map_body.items()}
        kind = JMS_MAP
    elif message.is_bytes:
        amqp.body = message.body
        amqp.inferred = True  # a data section, as ActiveMQ sends a BytesMessage
        kind = JMS_BYTES
    else:
        amqp.body = message.body.decode("utf-8", "replace")
        kind = JMS_TEXT
    amqp.annotations = {JMS_MSG_TYPE: kind}
    return amqp


_JAVA_TO_AMQP = {Int32: int32, Int16: short, Int8: byte, Float32: float32, Char: char}


def _amqp_value(value):
    """A value as proton encodes it: Java-typed ones (OpenWire's) as the AMQP type of that
    width."""
    java = _JAVA_TO_AMQP.get(type(value))
    if java is not None:
        return java(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 2 ** 63:
        return ulong(value)
    return value
