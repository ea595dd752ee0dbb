"""OpenWire messages <-> the broker's Message (docs/openwire.md has the table).

Sans-I/O.  A TextMessage is a message without content-length for STOMP (body UTF-8), a
BytesMessage one with; a MapMessage keeps its typed map (`map_body`); a plain Message and
Object/Stream messages remember their class (`jms_kind`).  Properties keep their Java types.
"""

from __future__ import annotations

import zlib

from pybrokerd.broker.destination import QUEUE, TEMP_QUEUE, TEMP_TOPIC, TOPIC, Destination, \
    DestinationError, split_stomp, PREFIXES
from pybrokerd.broker.message import DEFAULT_PRIORITY, Message
from pybrokerd.protocols.openwire import codec
from pybrokerd.protocols.openwire.codec import OpenWireError

KINDS = {100: QUEUE, 101: TOPIC, 102: TEMP_QUEUE, 103: TEMP_TOPIC}
TYPES = {kind: cls for cls, kind in ((codec.ActiveMQQueue, QUEUE), (codec.ActiveMQTopic, TOPIC),
                                     (codec.ActiveMQTempQueue, TEMP_QUEUE),
                                     (codec.ActiveMQTempTopic, TEMP_TOPIC))}
TEXT, BYTES, MAP, PLAIN, OBJECT, STREAM = 28, 24, 25, 23, 26, 27
KIND_NAMES = {PLAIN: "message", OBJECT: "object", STREAM: "stream"}
KIND_TYPES = {name: type_byte for type_byte, name in KIND_NAMES.items()}
NOT_PROPERTIES = frozenset(("JMSXGroupID", "JMSXGroupSeq"))
FOREIGN_PRODUCER = "ID:pybrokerd-foreign-id"  # the producer of ids that are not ActiveMQ's
_URL_PREFIXES = {"queue://": QUEUE, "topic://": TOPIC, "temp-queue://": TEMP_QUEUE,
                 "temp-topic://": TEMP_TOPIC}


# -- ids ------------------------------------------------------------------------------------
def producer_text(pid) -> str:
    return "%s:%d:%d" % (pid.connectionId, pid.sessionId, pid.value)


def consumer_text(cid) -> str:
    return "%s:%d:%d" % (cid.connectionId, cid.sessionId, cid.value)


def message_id_text(mid) -> str:
    if mid.textView:
        return mid.textView
    if mid.producerId is None:
        raise OpenWireError("a MessageId without a producer id")
    return "%s:%d" % (producer_text(mid.producerId), mid.producerSequenceId)


def _number(text: str):
    return int(text) if text.isdigit() and str(int(text)) == text else None


def message_id_struct(text: str, broker_seq: int) -> "codec.MessageId":
    """ActiveMQ's MessageId for a message id: parsed when it is ActiveMQ-shaped
    (`<connection>:<session>:<producer>:<seq>`), else carried whole as its text view."""
    parts = text.rsplit(":", 3)
    if len(parts) == 4 and parts[0].startswith("ID:"):
        session, value, seq = (_number(p) for p in parts[1:])
        if None not in (session, value, seq):
            return codec.MessageId(
                producerId=codec.ProducerId(connectionId=parts[0], sessionId=session, value=value),
                producerSequenceId=seq, brokerSequenceId=broker_seq)
    # a client's audit keys on producer id and sequence: give each its own
    return codec.MessageId(
        textView=text, producerId=codec.ProducerId(connectionId=FOREIGN_PRODUCER),
        producerSequenceId=broker_seq, brokerSequenceId=broker_seq)


# -- destinations ---------------------------------------------------------------------------
def destinations(struct) -> list[Destination]:
    """An ActiveMQDestination -> its destinations (a composite name lists several, each of
    the struct's kind unless it says `queue://`, `topic://`...)."""
    if struct is None:
        raise DestinationError("No destination given")
    kind = KINDS.get(struct.TYPE)
    if kind is None:
        raise DestinationError("Not a destination: %s" % type(struct).__name__)
    name = struct.physicalName
    if not name:
        raise DestinationError("A destination needs a name")
    parts = name.split(",")
    if len(parts) > MAX_COMPOSITE:
        raise DestinationError("A composite destination of %d names: at most %d"
                               % (len(parts), MAX_COMPOSITE))
    result = []
    for part in parts:
        part = part.strip()
        part_kind = kind
        for prefix, k in _URL_PREFIXES.items():
            if part.startswith(prefix):
                part, part_kind = part[len(prefix):], k
                break
        if not part:
            raise DestinationError("Empty destination name in %r" % name)
        dest = Destination(part_kind, part)
        if dest not in result:
            result.append(dest)
    return result


def destination(struct) -> Destination:
    found = destinations(struct)
    if len(found) != 1:
        raise DestinationError("A composite destination cannot be used here: %s"
                               % struct.physicalName)
    return found[0]


def destination_struct(dest):
    if isinstance(dest, Destination):
        return TYPES[dest.kind](physicalName=dest.name)
    if isinstance(dest, str):  # a reply-to another client named freely
        try:
            (prefix, name), = split_stomp(dest)
            return TYPES[PREFIXES[prefix]](physicalName=name)
        except (DestinationError, ValueError, KeyError):
            return codec.ActiveMQQueue(physicalName=dest)
    return None


# -- bodies ---------------------------------------------------------------------------------
MAX_INFLATED = 100 * 1024 * 1024  # ActiveMQ's DEFAULT_MAX_INFLATED_DATA_SIZE
MAX_COMPOSITE = 100                # destinations one composite name may list


def _inflate(data: bytes, with_length: bool, limit: int = MAX_INFLATED) -> bytes:
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(data[4:] if with_length else data, limit)
    except zlib.error as e:
        raise OpenWireError("a compressed message body is not zlib data: %s" % e) from None
    if inflater.unconsumed_tail:
        raise OpenWireError("a compressed message body inflates to more than %d bytes" % limit)
    return body


# -- OpenWire -> broker ---------------------------------------------------------------------
def to_broker(om, dest: Destination, resolve_reply_to=None) -> Message:
    """One OpenWire message for one destination -> a broker Message."""
    content = om.content
    kind = om.TYPE
    if content is not None and om.compressed:
        content = _inflate(content, kind == BYTES)
    properties = codec.decode_map(om.marshalledProperties) if om.marshalledProperties else {}
    map_body = None
    jms_kind = None
    if kind == TEXT:
        text = codec.decode_text(content) if content else None
        body, is_bytes = (text or "").encode("utf-8", "surrogatepass"), False
    elif kind == MAP:
        map_body = codec.decode_map(content) if content else {}
        body, is_bytes = content or b"", False
    elif kind == BYTES:
        body, is_bytes = content or b"", True
    else:
        jms_kind = KIND_NAMES.get(kind, "message")
        body, is_bytes = content or b"", kind in (OBJECT, STREAM)
    if om.groupID is not None:
        properties["JMSXGroupID"] = om.groupID
        if om.groupSequence:
            properties["JMSXGroupSeq"] = codec.JavaInt(om.groupSequence)
    reply_to = None
    if om.replyTo is not None:
        try:
            reply_to = destination(om.replyTo)
        except DestinationError:
            reply_to = om.replyTo.physicalName
    priority = om.priority if 0 <= om.priority <= 9 else DEFAULT_PRIORITY
    message = Message(
        message_id_text(om.messageId), dest, body, properties=properties,
        persistent=om.persistent, priority=priority, expires=max(om.expiration, 0),
        timestamp=om.timestamp or None, correlation_id=om.correlationId, reply_to=reply_to,
        type=om.type, is_bytes=is_bytes)
    message.map_body = map_body
    message.jms_kind = jms_kind
    return message


# -- broker -> OpenWire ---------------------------------------------------------------------
def to_openwire(message: Message):
    """The OpenWire message for a broker Message (without the dispatch around it)."""
    if message.map_body is not None:
        cls, content = codec.ActiveMQMapMessage, codec.encode_map(message.map_body)
    elif message.jms_kind is not None:
        type_byte = KIND_TYPES.get(message.jms_kind, PLAIN)
        cls = codec.TYPES[type_byte]
        content = message.body if type_byte != PLAIN or message.body else None
    elif message.is_bytes:
        cls, content = codec.ActiveMQBytesMessage, message.body
    else:
        cls = codec.ActiveMQTextMessage
        content = codec.encode_text(message.body.decode("utf-8", "replace"))
    props = message.properties
    extra = {}
    if message.scheduled_job_id is not None and "scheduledJobId" not in props:
        extra["scheduledJobId"] = message.scheduled_job_id
    if any(k in NOT_PROPERTIES for k in props) or extra:
        props = {k: v for k, v in props.items() if k not in NOT_PROPERTIES}
        props.update(extra)
    dest = destination_struct(message.destination)
    mid = message_id_struct(message.message_id, message.seq)
    return cls(
        producerId=mid.producerId, destination=dest,
        originalDestination=destination_struct(message.original_destination),
        messageId=mid, groupID=message.group_id,
        groupSequence=max(min(message.group_seq, 2 ** 31 - 1), -2 ** 31)
        if message.group_id is not None else 0,
        correlationId=message.correlation_id, persistent=message.persistent,
        expiration=message.expires, priority=message.priority,
        replyTo=destination_struct(message.reply_to), timestamp=message.timestamp,
        type=message.type, content=content,
        marshalledProperties=codec.encode_map(props) if props else None,
        dataStructure=message.data_structure, redeliveryCounter=message.redelivery_count,
        userID=message.user_id)
