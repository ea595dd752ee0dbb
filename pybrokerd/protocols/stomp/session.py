"""One STOMP connection: frames in, broker calls, frames out.

The session knows nothing of sockets.  Its owner (the Twisted protocol, or a test) gives it a
``Link`` with ``write(bytes)``, ``close()`` and ``log`` (and, if it can take several frames
in one call, ``write_many(list of bytes)``) and feeds it bytes; the session tells
the link when the connection must end.  Timers (heart-beats, the CONNECT deadline) use the
injected clock, so tests can drive them with ``twisted.internet.task.Clock``.

What it does follows ActiveMQ 5.17's STOMP transport (docs/stomp.md lists where we differ on
purpose): semantic errors get an ERROR and leave the connection open, framing errors get an
ERROR and close it.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import failure
from zope.interface import implementer

from pybrokerd import __version__
from pybrokerd.broker.core import PRODUCER_ID, BrokerError, Transaction
from pybrokerd.security import SecurityError
from pybrokerd.broker.interfaces import IConsumerSession
from pybrokerd.broker.destination import (
    QUEUE, TEMP_QUEUE, TEMP_TOPIC, TOPIC, Destination, DestinationError, split_stomp)
from pybrokerd.broker.message import DEFAULT_PRIORITY, Message, java_text
from pybrokerd.broker.queue import ACK_MODES, AUTO, CLIENT, Consumer
from pybrokerd.broker.selector import SelectorError, compile_selector
from pybrokerd.protocols.stomp.codec import (
    FrameError, FrameParser, Limits, escape_header, header_lines, serialize)
from pybrokerd.protocols.stomp.mapmessage import render as render_map
from pybrokerd.broker.usage import ResourceLimitError
from scheduler.scheduler import ScheduleError, has_scheduling_headers
from stores.batching import StoreWriteError
from scheduler.scheduler import parse as parse_schedule

log = Logger()

SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2")
AUTH_FAILURE_DELAY = 0.5  # seconds before a refused CONNECT is answered
CLIENT_COMMANDS = frozenset(("CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK",
                             "BEGIN", "COMMIT", "ABORT", "DISCONNECT"))

_HANDLERS = {command: "on_" + command.lower() for command in CLIENT_COMMANDS}

# Headers a producer may not set or that become message fields rather than properties.
_NOT_PROPERTIES = frozenset((
    "destination", "message-id", "redelivered", "subscription", "JMSXUserID", "ack", "transaction",
    "receipt", "content-length", "persistent", "priority", "expires", "timestamp",
    "correlation-id", "reply-to", "type",
    ""))  # a line ":v" names nothing: never passed on (a ":v" header line would break parsers)

# headers of a SEND, besides persistent, that set a field of the message (or its kind)
_FIELD_HEADERS = frozenset((
    "priority", "expires", "timestamp", "reply-to", "amq-msg-type", "correlation-id", "type"))

# headers that set a JMS field of the message rather than a property (ActiveMQ's setters)
_JMS_FIELDS = frozenset((
    "JMSCorrelationID", "JMSType", "JMSPriority", "JMSExpiration", "JMSTimestamp",
    "JMSDeliveryMode", "JMSXDeliveryCount", "JMSRedelivered", "JMSReplyTo"))

# ActiveMQ keeps message groups to itself: these are not echoed on MESSAGE frames.
_NOT_ECHOED = frozenset(("JMSXGroupID", "JMSXGroupSeq"))


_PREFIX_OF = {QUEUE: "/queue/", TOPIC: "/topic/", TEMP_QUEUE: "/temp-queue/", TEMP_TOPIC: "/temp-topic/"}
_TEMP_PREFIXES = {"/temp-queue/": TEMP_QUEUE, "/temp-topic/": TEMP_TOPIC}
_KIND_OF_PREFIX = {"/queue/": QUEUE, "/topic/": TOPIC, "/remote-temp-queue/": TEMP_QUEUE,
                   "/remote-temp-topic/": TEMP_TOPIC}


@dataclass
class StompConfig:
    limits: Limits = field(default_factory=Limits)
    heartbeat_grace: float = 1.5     # a client promising beats every T ms is dropped after T*grace
    connect_timeout: float = 30.0    # seconds a connection may stay open without CONNECT
    default_heartbeat: tuple = (0, 0)
    queue_prefetch: int = 1000
    topic_prefetch: int = 32767
    durable_prefetch: int = 100
    max_connections: int = 1000          # as ActiveMQ's shipped maximumConnections; 0: no limit
    max_connections_per_address: int = 0  # 0: no limit (ActiveMQ has none)
    max_subscriptions: int = 0            # per connection; 0: no limit


class ProtocolError(Exception):
    """A client mistake.  fatal=True closes the connection after the ERROR frame."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


class _Writes:
    """While STOMP input is being handled (one read from a socket, or the queues woken by a
    socket with room again), the frames written to each connection are gathered and handed
    to its socket in one call at the end: one pass through the transport per connection
    and read instead of one per frame.  A connection that has gathered FLUSH_AT bytes is
    written at once, so that a full socket still stops a dispatch as before (flow control).
    One per process: the reactor thread is the only one that writes."""

    FLUSH_AT = 64 * 1024

    def __init__(self):
        self.depth = 0
        self.sessions: list = []

    def __enter__(self):
        self.depth += 1

    def __exit__(self, *exc):
        self.depth -= 1
        if not self.depth:
            sessions, self.sessions = self.sessions, []
            for session in sessions:
                session._flush()


_WRITES = _Writes()


@implementer(IConsumerSession)
class StompSession:
    protocol = "stomp"
    numbers_auto_deliveries = False  # a MESSAGE to an auto-ack subscription has no ack id

    def __init__(self, broker, link, *, clock, id_generator, config: StompConfig | None = None):
        self.broker = broker
        self.link = link
        self.clock = clock
        self.config = config or StompConfig()
        self.parser = FrameParser(self.config.limits, commands=CLIENT_COMMANDS)
        self.connection_id = id_generator.connection_id()
        self.local_message_prefix = self.connection_id + ":"  # ids of the messages it sends
        self.version = "1.0"
        self.connected = False
        self.closing = False
        self._goodbye = False  # DISCONNECT was handled: the connection closes soon
        self.client_id = None
        self.writable = True
        self.peer = "unknown"
        self.subscriptions: dict[str, Consumer] = {}
        self.transactions: dict[str, Transaction] = {}
        self.producer_ids: set[str] = set()  # stamped for duplicate suppression
        self.principal = None        # who authenticated (pybrokerd.security.Principal)
        self._waiting = None         # frames that arrived while CONNECT was being checked
        self._dest_cache: dict[str, list] = {}  # destination header -> [Destination]
        self._dest_text: dict = {}  # Destination -> its escaped `destination` header value
        self._temp: dict[tuple[str, str], Destination] = {}
        self._temp_names: dict[Destination, str] = {}
        self._message_seq = itertools.count(1)
        self._id_prefix = self.connection_id + ":1:1:"  # + the sequence: a message id
        self._ack_seq = itertools.count(1)
        self._ack_head = None  # (id prefix, its escaped `ack:` line start): see _ack_line
        self._held = None  # MESSAGE frames waiting for the current frame's answer
        self._held_bytes = 0  # of the frames held back (here or behind a RECEIPT)
        self._holding = False  # so many are held back that no more are dispatched for now
        self._paused = False  # the socket's send buffer is full
        self._blocked = False  # a SEND waits for room (flow control): reading is paused
        self._flow_wait = None
        self._receipts: collections.deque = collections.deque()
        # the last entry of _receipts with a RECEIPT to send, or None: MESSAGEs made while
        # there is one wait behind it, so they leave after that RECEIPT and in the order they
        # were made, whichever path (a frame of ours, another connection, a refill from the
        # store) made them; receipt-less entries (only a failure to report) hold none back
        self._barrier = None
        # ids in flight to subscriptions since closed (None), or shown by a browser (_BROWSED)
        self._late_acks: dict[str, str | None] = {}
        self._after_receipts: list = []
        self._last_read = self._last_write = clock.seconds()
        self._out: list | None = None  # frames gathered while input is handled (_Writes)
        self._out_size = 0
        self._read_timer = self._write_timer = None
        self._read_window = self._write_interval = 0.0
        self._connect_timer = clock.callLater(self.config.connect_timeout, self._connect_timed_out)

    # == input ==============================================================================
    def data_received(self, data: bytes) -> None:
        self._last_read = self.clock.seconds()
        if self.closing:
            return
        self.parser.feed(data)
        with _WRITES:
            self._gathering = True
            try:
                while not self.closing:
                    try:
                        frame = self.parser.next_frame()
                    except FrameError as e:
                        self._error(str(e), receipt=e.receipt, fatal=True)
                        return
                    if frame is None:
                        return
                    if self._waiting is not None:
                        self._waiting.append(frame)  # the CONNECT is still being authenticated
                        continue
                    self._handle(frame)
            finally:
                self._gathering = False
                self._finish_gathered()

    # ACKs without receipt or transaction that arrive together (a consumer acking what it
    # read) are taken at once, one by one, but their store removals are written, and their
    # queues woken, once for the run of them; SENDs without receipt or transaction that
    # arrive together (a producer streaming) are checked and routed one by one at once, but
    # the persistent ones stored as one write, and all enqueued after it is submitted, once
    # for the run.  A run ends before the next frame of another kind, or at the end of the
    # read.
    _gathering = False
    _acks = None  # (removal ops, queues to wake) gathered so far
    _sends = None  # broker operations of the SENDs gathered so far
    _run = 0  # frames in the run gathered so far (each failed one gets its own ERROR)

    def _finish_gathered(self) -> None:
        count, self._run = self._run, 0
        if self._acks is not None:
            gathered, self._acks = self._acks, None
            self._finish(self.broker.finish_acks, gathered, count, "ACK")
        if self._sends is not None:
            gathered, self._sends = self._sends, None
            self._finish(self.broker.finish_sends, gathered, count, "SEND")

    def _finish(self, finish, gathered, count: int, command: str) -> None:
        try:
            done = finish(gathered)
        except Exception:  # as _dispatch_frame does for one frame: said, and logged
            log.failure("STOMP {command}s from {connection}", command=command,
                        connection=self.connection_id)
            done = defer.fail(BrokerError("Internal error while processing %s (see the broker "
                                          "log)" % command))
        self._receipt(None, done, count)

    def _handle(self, frame) -> None:
        # Messages this frame makes the broker dispatch to this same connection go out after
        # the frame's own answer (its RECEIPT), as with ActiveMQ's asynchronous dispatch: a
        # client that waits for the RECEIPT of a COMMIT, an ACK or a SEND to its own
        # subscription, then reads its messages, sees them in that order.
        if self._acks is not None or self._sends is not None:
            gathered = "ACK" if self._acks is not None else "SEND"  # (never both)
            if (frame.command != gathered or "receipt" in frame.headers
                    or "transaction" in frame.headers):
                # what was gathered is done first, in order, and what it makes the broker
                # dispatch goes out now, not held back behind this frame's answer
                self._finish_gathered()
        self._held = []
        try:
            self._dispatch_frame(frame)
        finally:
            held, self._held = self._held, None
            if held:  # (none held: nothing to release either)
                self._emit_held(held)

    def _dispatch_frame(self, frame) -> None:
        command = frame.command
        receipt = frame.headers.get("receipt")
        try:
            if command not in CLIENT_COMMANDS:
                raise ProtocolError("Unknown STOMP action: %s" % _clip(command), fatal=True)
            if self._goodbye:
                # sent behind a DISCONNECT: not done, and told so, in order (as ActiveMQ)
                self._receipts.append([receipt, True, "Not connected.", []])
                self._flush_receipts()
                return
            if not self.connected and command not in ("CONNECT", "STOMP"):
                raise ProtocolError("Not connected.")
            getattr(self, _HANDLERS[command])(frame, receipt)
        except ProtocolError as e:
            self._error(str(e), receipt=receipt, fatal=e.fatal)
        except (BrokerError, DestinationError, SelectorError, ScheduleError) as e:
            self._error(str(e), receipt=receipt)
        except Exception:
            log.failure("STOMP {command} from {connection}", command=command,
                        connection=self.connection_id)
            self._error("Internal error while processing %s (see the broker log)" % command,
                        receipt=receipt)

    # == CONNECT ============================================================================
    def on_connect(self, frame, receipt) -> None:
        if self.connected or self._waiting is not None:
            raise ProtocolError("Already connected.")
        headers = frame.headers
        self.version = self._negotiate(headers.get("accept-version"))
        client_beats = self._parse_heartbeat(headers.get("heart-beat"))  # refuse bad ones now
        security = self.broker.security
        login, passcode = headers.get("login"), headers.get("passcode")
        if not security.users:
            # nothing to check (no users configured): no hashing, no delay
            self._connected(frame, receipt, client_beats, security.authenticate_anonymous(login))
            return
        # password hashing is slow on purpose: off the reactor thread, frames that follow
        # wait for the verdict
        self._waiting = []
        self.broker.authenticate(login, passcode).addCallbacks(
            lambda principal: self._authenticated(frame, receipt, client_beats, principal),
            lambda failure: self._refused(failure, receipt))

    def _authenticated(self, frame, receipt, client_beats, principal) -> None:
        waiting, self._waiting = self._waiting, None
        if self.closing:
            return
        self._held = []
        try:
            self._connected(frame, receipt, client_beats, principal)
        except ProtocolError as e:
            self._error(str(e), receipt=receipt, fatal=e.fatal)
        finally:
            held, self._held = self._held, None
            if held:  # (none held: nothing to release either)
                self._emit_held(held)
        self._replay(waiting)

    def _replay(self, frames) -> None:
        """Handle frames that waited; if one of them has to wait again (flow control), the
        rest queue up behind it."""
        for i, queued in enumerate(frames):
            if self.closing:
                return
            if self._waiting is not None:
                self._waiting.extend(frames[i:])
                return
            self._handle(queued)

    def _refused(self, failure, receipt) -> None:
        if failure.check(SecurityError) is None:
            log.failure("authenticating {connection}", failure, connection=self.connection_id)
        text = str(failure.value) if failure.check(SecurityError) else "Authentication failed"
        log.info("STOMP {connection} from {peer}: {reason}", connection=self.connection_id,
                 peer=self.peer, reason=text)
        # a small delay before the answer slows down password guessing
        self.clock.callLater(AUTH_FAILURE_DELAY, self._error, text, receipt, True)

    def _connected(self, frame, receipt, client_beats, principal) -> None:
        headers = frame.headers
        client_id = headers.get("client-id") or None
        try:
            self.broker.connect(self, client_id)
        except BrokerError as e:
            raise ProtocolError(str(e), fatal=True)
        self.principal = principal
        self.client_id = client_id
        self.connected = True
        self.parser.version = self.version
        if self._connect_timer.active():
            self._connect_timer.cancel()
        cx, cy = client_beats
        reply = {"server": "pybrokerd/%s" % __version__, "heart-beat": "%d,%d" % (cy, cx),
                 "session": client_id or self.connection_id}  # ActiveMQ: the client id
        # ActiveMQ answers a CONNECT's request-id, or else its receipt, in both headers
        answer = headers.get("request-id", receipt)
        if answer is not None:
            reply["response-id"] = reply["receipt-id"] = answer
        reply["version"] = self.version  # ActiveMQ sends it on 1.0 too
        self._write("CONNECTED", reply)
        self._start_heartbeats(cx, cy)

    on_stomp = on_connect

    @staticmethod
    def _negotiate(accept: str | None) -> str:
        if accept is None:
            return "1.0"
        offered = set(accept.split(","))  # not trimmed: "1.0, 1.1" offers 1.0 (ActiveMQ)
        common = [v for v in SUPPORTED_VERSIONS if v in offered]
        if not common:
            raise ProtocolError("Invalid Protocol version[%s], supported versions are: [1.2, 1.1, 1.0]"
                                % accept, fatal=True)
        return common[-1]

    def _parse_heartbeat(self, value: str | None) -> tuple[int, int]:
        if value is None or value.strip() == "":
            return self.config.default_heartbeat
        parts = value.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            cx, cy = (int(p.strip()) for p in parts)
            if cx < 0 or cy < 0:
                raise ValueError
        except ValueError:
            raise ProtocolError("Invalid heart-beat header:%s (expected two non-negative "
                                "integers like 10000,10000)" % _clip(value), fatal=True)
        return cx, cy

    # == heart-beats ========================================================================
    def _start_heartbeats(self, cx: int, cy: int) -> None:
        if cy > 0:
            self._write_interval = cy / 1000.0
            self._write_timer = self.clock.callLater(self._write_interval, self._beat)
        if cx > 0:
            self._read_window = cx / 1000.0 * self.config.heartbeat_grace
            self._read_timer = self.clock.callLater(self._read_window, self._check_read)

    def _beat(self) -> None:
        now = self.clock.seconds()
        due = self._last_write + self._write_interval
        if now >= due - 0.001:
            self.link.write(b"\n")
            self._last_write = now
            due = now + self._write_interval
        self._write_timer = self.clock.callLater(max(due - now, 0.001), self._beat)

    def _check_read(self) -> None:
        now = self.clock.seconds()
        if self._blocked:
            self._last_read = now  # we stopped reading, not the client its heart-beats
        deadline = self._last_read + self._read_window
        if now >= deadline:
            log.info("STOMP {connection}: no data for {seconds:.1f}s despite the negotiated "
                     "heart-beat; closing", connection=self.connection_id, seconds=now - self._last_read)
            self._close()
            return
        self._read_timer = self.clock.callLater(deadline - now, self._check_read)

    def _connect_timed_out(self) -> None:
        if not self.connected and not self.closing:
            log.info("STOMP {connection}: no CONNECT within {timeout}s; closing",
                     connection=self.connection_id, timeout=self.config.connect_timeout)
            self._close()

    # == destinations =======================================================================
    def _destinations(self, text: str | None, what: str) -> list[Destination]:
        if text is None or not text.strip():
            if what == "SEND":  # ActiveMQ's words, both
                raise ProtocolError("SEND received without a Destination specified!")
            raise ProtocolError("Invalid empty or 'null' Destination header")
        cached = self._dest_cache.get(text)
        if cached is not None:
            return cached
        found = [self._destination(prefix, name)
                 for prefix, name in split_stomp(text, fallback=True, on_fallback=self._bare)]
        if not any(d.is_temporary for d in found):
            if len(self._dest_cache) >= 256:
                self._dest_cache.clear()
            self._dest_cache[text] = found
        return found

    def _bare(self, name: str) -> None:
        # ActiveMQ makes it a queue without a word; a typo ("queue/x") then feeds a queue
        # nobody reads, so say so where an operator looks (once per name and connection:
        # the destination cache remembers it)
        log.info("STOMP {connection}: destination {name!r} has no /queue/ or /topic/ prefix: "
                 "it is the queue {queue} (as in ActiveMQ)", connection=self.connection_id,
                 name=name, queue="/queue/" + name)

    def _destination(self, prefix: str, name: str) -> Destination:
        kind = _TEMP_PREFIXES.get(prefix)
        if kind is None:
            return Destination(_KIND_OF_PREFIX[prefix], name)
        dest = self._temp.get((kind, name))
        if dest is None:
            dest = self.broker.create_temporary(kind, self.connection_id, self)
            self._temp[(kind, name)] = dest
            self._temp_names[dest] = _PREFIX_OF[kind] + name
        return dest

    def stomp_name(self, dest: Destination) -> str:
        return self._temp_names.get(dest) or dest.stomp()

    def _authorize(self, operation: str, destinations) -> None:
        self.broker.authorize(self.principal, operation, destinations)

    # == SEND ===============================================================================
    def on_send(self, frame, receipt) -> None:
        headers = frame.headers
        destinations = self._destinations(headers.get("destination"), "SEND")
        tx = self._transaction(headers.get("transaction")) if "transaction" in headers else None
        self._authorize("write", destinations)
        message = self._build_message(frame, destinations[0])
        if has_scheduling_headers(message.properties):
            parse_schedule(message.properties)  # refuse bad values now, with a clear ERROR
        copies = [message]
        if len(destinations) > 1:
            copies += [message.copy(destination=d) for d in destinations[1:]]
            # ActiveMQ: each copy remembers the composite it was sent to, in its own notation
            # ("/queue/a,queue://b,topic://c" as a STOMP header)
            first = destinations[0]
            composite = Destination(first.kind, first.name + "".join(
                "," + d.activemq() for d in destinations[1:]))
            for copy in copies:
                copy.original_destination = composite
        usage = self.broker.flow_blocker(copies)
        if usage is not None:
            self._block(frame, usage, message)
            return
        if tx is not None:
            tx.sends.extend(copies)
            self._receipt(receipt)
            return
        producer_id = message.properties.get(PRODUCER_ID)
        if producer_id is not None:
            self.producer_ids.add(producer_id)
        elif self._gathering and receipt is None and self.broker.can_gather(copies):
            if self._sends is None:
                self._sends = []
            self.broker.publish(copies, durable=False, into=self._sends)
            self._run += 1
            return
        if self._acks is not None or self._sends is not None:
            self._finish_gathered()  # in order, before this one
        self._receipt(receipt, self.broker.publish(copies, durable=receipt is not None))

    def _build_message(self, frame, destination: Destination) -> Message:
        h = frame.headers
        # (a SEND with only destination, persistent, content-length... has no property)
        properties = {} if h.keys() <= _NOT_PROPERTIES else {
            k: v for k, v in h.items() if k not in _NOT_PROPERTIES}
        if not _FIELD_HEADERS.isdisjoint(h):
            return self._build_message_with_fields(frame, destination, properties)
        message = Message(
            "%s%d" % (self._id_prefix, next(self._message_seq)), destination, frame.body,
            # persistent: exactly "true", as ActiveMQ ("True" is not persistent there either)
            properties=properties, persistent=h.get("persistent") == "true",
            is_bytes="content-length" in h)
        if not _JMS_FIELDS.isdisjoint(properties):
            self._jms_fields(message)
        return message

    def _build_message_with_fields(self, frame, destination: Destination,
                                   properties: dict) -> Message:
        """A SEND that sets priority, expiry, timestamp, correlation id, reply-to, type or
        the message's kind itself."""
        h = frame.headers
        # out of 0-9: the nearest (as ActiveMQ, which clamps a JMS priority)
        priority = min(max(_int_header(h, "priority", DEFAULT_PRIORITY), 0), 9)
        expires = _int_header(h, "expires", 0)
        timestamp = _int_header(h, "timestamp", 0) or None
        reply_to = h.get("reply-to")
        if reply_to:
            reply_to = self._reply_to(reply_to)
        msg_type = h.get("amq-msg-type")
        is_bytes = msg_type == "bytes" if msg_type in ("bytes", "text") else "content-length" in h
        if msg_type == "text" and "content-length" in h:
            # ActiveMQ keeps the length of a text message said to be text as a property: it
            # comes back on the MESSAGE (amq-msg-type itself is kept as any other header)
            properties["content-length"] = h["content-length"]
        message = Message(
            "%s%d" % (self._id_prefix, next(self._message_seq)), destination, frame.body,
            properties=properties, persistent=h.get("persistent") == "true",
            priority=priority, expires=expires, timestamp=timestamp,
            correlation_id=h.get("correlation-id"), reply_to=reply_to, type=h.get("type"),
            is_bytes=is_bytes)
        if not _JMS_FIELDS.isdisjoint(properties):
            self._jms_fields(message)
        return message

    def _jms_fields(self, message: Message) -> None:
        """Headers named after JMS fields set the field, as ActiveMQ's message property
        setters do (JMSPriority:5 is priority 5); they are not kept as properties."""
        p = message.properties
        for name in _JMS_FIELDS.intersection(p):
            value = p.pop(name)
            if name == "JMSCorrelationID":
                message.correlation_id = value
            elif name == "JMSType":
                message.type = value
            elif name == "JMSPriority":
                message.priority = min(max(_int_header(p, name, 0, value), 0), 9)
            elif name == "JMSExpiration":
                message.expires = _int_header(p, name, 0, value)
            elif name == "JMSTimestamp":
                message.timestamp = _int_header(p, name, 0, value) or message.timestamp
            elif name == "JMSDeliveryMode":
                text = value.strip().lower()
                if text in ("true", "false"):
                    message.persistent = text == "true"
                else:  # javax.jms.DeliveryMode: 2 is PERSISTENT
                    message.persistent = _int_header(p, name, 0, value) == 2
            elif name == "JMSXDeliveryCount":
                message.redelivery_count = max(_int_header(p, name, 0, value) - 1, 0)
            elif name == "JMSRedelivered":
                if value.strip().lower() == "true":
                    message.redelivery_count = max(message.redelivery_count, 1)
            elif name == "JMSReplyTo" and value:
                message.reply_to = self._reply_to(value, fallback=True)

    def _reply_to(self, text: str, fallback: bool = False):
        """A reply-to as a destination; ActiveMQ keeps one it cannot parse as a plain string
        (and JMSReplyTo, made by its destination factory, takes a bare name as a queue)."""
        try:
            parts = split_stomp(text, fallback=fallback)
        except DestinationError:
            return text
        return self._destination(*parts[0]) if len(parts) == 1 else text

    # == SUBSCRIBE / UNSUBSCRIBE ============================================================
    def on_subscribe(self, frame, receipt) -> None:
        h = frame.headers
        destinations = self._destinations(h.get("destination"), "SUBSCRIBE")
        sub_id = key = h.get("id")
        implicit_id = sub_id is None
        if implicit_id:
            if self.version != "1.0":
                raise ProtocolError("SUBSCRIBE received without a subscription id!")
            sub_id = key = h["destination"]
            n = 1
            while key in self.subscriptions:
                # as ActiveMQ: a 1.0 client may subscribe to one destination twice (two
                # consumers; UNSUBSCRIBE by destination closes them one at a time)
                n += 1
                key = "%s\x00%d" % (sub_id, n)
        elif sub_id in self.subscriptions:
            raise ProtocolError("A subscription with id %r already exists on this connection" % sub_id)
        limit = self.config.max_subscriptions
        if limit and len(self.subscriptions) >= limit:
            raise ProtocolError("Maximum subscriptions per connection (%d) reached: unsubscribe "
                                "first, or raise --max-subscriptions" % limit)
        ack_mode = h.get("ack", AUTO)
        if ack_mode not in ACK_MODES:
            # ActiveMQ takes any other value (a typo, "Client") as auto, without a word: so do
            # we, for the clients that rely on it, but say so where an operator looks
            log.warn("STOMP {connection}: SUBSCRIBE to {destination} with ack mode {mode!r}, "
                     "which is none of auto, client, client-individual: auto (as ActiveMQ)",
                     connection=self.connection_id, destination=h.get("destination"),
                     mode=_clip(ack_mode))
            ack_mode = AUTO
        self._authorize("read", destinations)
        selector_text = (h.get("selector") or "").strip()
        selector = compile_selector(selector_text) if selector_text else None
        if h.get("browser", "").lower() == "true":
            self._browse(sub_id, destinations, selector, receipt, ack_mode)
            return
        durable_name = h.get("activemq.subscriptionName")  # "" too: ActiveMQ names one so
        if durable_name is not None and any(d.is_queue for d in destinations):
            raise ProtocolError("Invalid Subscription: cannot durably subscribe to a Queue destination!")
        if durable_name is not None:
            default_prefetch = self.config.durable_prefetch
        elif all(d.is_topic for d in destinations):
            default_prefetch = self.config.topic_prefetch
        else:
            default_prefetch = self.config.queue_prefetch
        prefetch = _prefetch(h.get("activemq.prefetchSize"), default_prefetch)
        consumer = Consumer(
            self, sub_id, destinations, ack_mode=ack_mode, selector=selector,
            selector_text=selector_text, prefetch=prefetch,
            exclusive=h.get("activemq.exclusive", "").lower() == "true",
            durable_name=durable_name, client_id=self.client_id or self.connection_id,
            no_local=h.get("activemq.noLocal", "").lower() == "true",
            priority=_consumer_priority(h.get("activemq.priority")))
        consumer.implicit_id = implicit_id
        consumer.transformation = h.get("transformation")  # how map messages are rendered
        # As ActiveMQ: with a receipt, the RECEIPT goes out before the first MESSAGE.
        consumer.closed = True
        self.broker.subscribe(consumer)
        self.subscriptions[key] = consumer
        self._receipt(receipt)
        consumer.closed = False
        for source in consumer.sources:
            source.wake()

    def _browse(self, sub_id, destinations, selector, receipt, ack_mode=AUTO) -> None:
        if self.version == "1.0":
            raise ProtocolError("Queue Browser feature only valid for Stomp v1.1+ clients!")
        if any(d.is_topic for d in destinations):
            raise ProtocolError("Only queues can be browsed")
        browser = Consumer(self, sub_id, destinations, ack_mode=ack_mode)
        browser.closed = True  # never attached to a queue: nothing is consumed
        self.subscriptions[sub_id] = browser
        self._receipt(receipt)
        found = self.broker.browse(destinations, selector)

        def send(messages):
            for message in messages:
                if ack_mode == AUTO:
                    self.deliver(browser, message, None)
                    continue
                # as ActiveMQ: a browser in a client ack mode names an ack that does
                # nothing (the message stays in the queue); a NACK of it is refused
                ack_id = self.next_ack_id()
                self._remember_late(ack_id if self.version == "1.2" else message.message_id,
                                    _BROWSED)
                self.deliver(browser, message, ack_id)
            self._emit(serialize("MESSAGE", {"subscription": sub_id, "message-id": "0",
                                             "browser": "end",
                                             "destination": h_join(self, destinations)},
                                 b"", self.version))
        found.addCallback(send)
        found.addErrback(lambda f: self._error("Browsing failed: %s" % f.getErrorMessage()))

    def on_unsubscribe(self, frame, receipt) -> None:
        h = frame.headers
        sub_id = h.get("id")
        durable = h.get("activemq.subscriptionName")
        if sub_id is None and self.version != "1.0":
            raise ProtocolError("UNSUBSCRIBE received without a subscription id!")
        if sub_id is None and durable is None and "destination" not in h:
            raise ProtocolError("UNSUBSCRIBE must name the subscription id or the destination")
        if durable is not None:
            # ActiveMQ: naming the durable subscription removes it, which fails while it is in
            # use; UNSUBSCRIBE by id first to detach the consumer.
            done = self.broker.remove_durable(self.client_id or self.connection_id, durable)
            self._receipt(receipt, done)
            return
        if sub_id is None:
            wanted = h["destination"]
            sub_id = next((k for k, c in self.subscriptions.items()
                           if ",".join(self.stomp_name(d) for d in c.destinations) == wanted
                           or k == wanted), None)
        consumer = self.subscriptions.pop(sub_id, None) if sub_id is not None else None
        if consumer is None:
            raise ProtocolError("No subscription matched.")
        # an ACK of what it had in flight may still come (a client acks what it processed):
        # ActiveMQ answers it as usual, though the messages went back to the queue
        for ack_id, delivery in consumer.in_flight.items():
            self._remember_late(ack_id if self.version == "1.2" else delivery.message.message_id)
        self._receipt(receipt, self.broker.unsubscribe(consumer))

    def _remember_late(self, shown: str, kind=None) -> None:
        """An ack id (1.2) or message id whose ACK gets a RECEIPT and changes nothing."""
        late = self._late_acks
        late[shown] = kind
        while len(late) > _LATE_ACKS:
            del late[next(iter(late))]

    # == ACK / NACK =========================================================================
    def on_nack(self, frame, receipt) -> None:
        if self.version == "1.0":
            raise ProtocolError("NACK received but connection is in v1.0 mode.")
        self.on_ack(frame, receipt, "nack")

    def on_ack(self, frame, receipt, kind: str = "ack") -> None:
        h = frame.headers
        command = frame.command
        if self.version == "1.2":
            ack_id = h.get("id")
            if ack_id is None:
                raise ProtocolError("%s received without a ack id for acknowledge!" % command)
            found = None
            for c in self.subscriptions.values():
                if ack_id in c.in_flight:  # (Consumer.resolve, in line)
                    found = (c, ack_id)
                    break
            shown = ack_id
        else:
            message_id = h.get("message-id")
            if message_id is None:
                raise ProtocolError("%s received without a message-id to acknowledge!" % command)
            if "subscription" not in h and self.version == "1.1":
                raise ProtocolError("%s received without a subscription id for acknowledge!"
                                    % command)
            candidates = self.subscriptions.values()
            if "subscription" in h and self.version != "1.0":
                sub = self.subscriptions.get(h["subscription"])
                candidates = [sub] if sub is not None else []
            found = next(((c, c.resolve(message_id=message_id)) for c in candidates
                          if c.resolve(message_id=message_id)), None)
            shown = message_id
        if found is None:
            if "transaction" in h:
                self._transaction(h["transaction"])  # an unknown one is the error to report
            late = self._late_acks.pop(shown, False)
            if late is _BROWSED and kind == "nack":
                raise ProtocolError("Cannot Nack a message on a Queue Browser Subscription.")
            if late is not False:
                # of a subscription closed since, or of a browser: nothing to do
                self._receipt(receipt)
                return
            raise ProtocolError("Unexpected %s received for message-id [%s]" % (command, shown))
        consumer, key = found
        if kind == "nack" and "transaction" in h:
            self._transaction(h["transaction"])
            raise ProtocolError("Poison ack cannot be transacted: a NACK sends the message to "
                                "the dead letter queue at once, outside any transaction")
        ids = consumer.up_to(key) if kind == "ack" and consumer.ack_mode == CLIENT else [key]
        if kind == "ack" and self._gathering and receipt is None and "transaction" not in h:
            if self._acks is None:
                self._acks = ([], set())
            self.broker.ack(consumer, ids, into=self._acks)
            self._run += 1
            return
        if self._acks is not None or self._sends is not None:
            self._finish_gathered()  # in order, before this one
        if "transaction" in h:
            tx = self._transaction(h["transaction"])
            self.broker.tx_ack(tx, consumer, ids, kind)
            self._receipt(receipt)
            return
        done = (self.broker.ack(consumer, ids, durable=receipt is not None) if kind == "ack"
                else self.broker.nack(consumer, ids))
        self._receipt(receipt, done)

    # == transactions =======================================================================
    def _transaction(self, tx_id: str | None) -> Transaction:
        tx = self.transactions.get(tx_id) if tx_id is not None else None
        if tx is None:
            raise ProtocolError("Invalid transaction id: %s" % tx_id)
        return tx

    def _tx_header(self, frame, command: str) -> str:
        tx_id = frame.headers.get("transaction")
        if not tx_id:  # ActiveMQ's words
            raise ProtocolError("Must specify the transaction you are %s" % {
                "BEGIN": "beginning", "COMMIT": "committing", "ABORT": "aborting"}[command])
        return tx_id

    def on_begin(self, frame, receipt) -> None:
        tx_id = self._tx_header(frame, "BEGIN")
        if tx_id in self.transactions:
            raise ProtocolError("The transaction was already started: %s" % tx_id)
        self.transactions[tx_id] = Transaction(tx_id)
        self._receipt(receipt)

    def on_commit(self, frame, receipt) -> None:
        tx = self._transaction(self._tx_header(frame, "COMMIT"))
        del self.transactions[tx.tx_id]
        self._receipt(receipt, self.broker.commit(tx))

    def on_abort(self, frame, receipt) -> None:
        tx = self._transaction(self._tx_header(frame, "ABORT"))
        del self.transactions[tx.tx_id]
        self.broker.rollback(tx)
        self._receipt(receipt)

    # == DISCONNECT =========================================================================
    def on_disconnect(self, frame, receipt) -> None:
        if self.producer_ids:
            # a clean goodbye: these producers will never re-send, so stop remembering them
            self.broker.forget_producers(self.producer_ids)
            self.producer_ids = set()
        self._release()
        self._goodbye = True
        self._receipt(receipt)
        # the close waits for the RECEIPTs owed, and for the frames read with this one (each
        # answered "Not connected.", as by ActiveMQ, instead of dropped without a word)
        self.clock.callLater(0, self._when_receipts_sent, self._close)

    # == output =============================================================================
    def next_ack_id(self) -> str:
        return "%s:%d" % (self.connection_id, next(self._ack_seq))

    def deliver(self, consumer: Consumer, message: Message, ack_id: str | None) -> None:
        if (message.map_body is not None or consumer.implicit_id or self._temp_names
                or consumer.transformation is not None):
            self._emit(self._message_frame(consumer, message, ack_id))
            return
        # the command and header lines are the same for every subscriber of this protocol
        # version: encoded once (a topic's fan-out reuses the bytes); `subscription` (and
        # `ack`) close the header block
        key = (self.version, message.redelivery_count)
        wire = message.wire
        if wire is None or wire[0] != key:
            wire = message.wire = (key, self._message_head(message))
        end = consumer.wire_line
        if end is None:
            end = consumer.wire_line = header_lines(
                {"subscription": consumer.subscription_id}, self.version).encode("utf-8")
        if ack_id is not None and self.version == "1.2" and consumer.ack_mode != AUTO:
            end += self._ack_line(ack_id)
        self._emit(b"".join((wire[1], end, b"\n", message.body, b"\x00\n")))

    def _ack_line(self, ack_id: str) -> bytes:
        """The `ack` header line of a 1.2 MESSAGE.  Our ack ids are the connection id and a
        number (next_ack_id): the first part is escaped once per connection."""
        head = self._ack_head
        if head is None:
            prefix = self.connection_id + ":"
            line = header_lines({"ack": prefix}, "1.2")[:-1].encode("utf-8")
            head = self._ack_head = (prefix, line)
        prefix, line = head
        if ack_id.startswith(prefix):
            number = ack_id[len(prefix):]
            if number.isdigit():  # nothing to escape in it
                return b"%s%s\n" % (line, number.encode("utf-8"))
        return header_lines({"ack": ack_id}, "1.2").encode("utf-8")

    def _message_head(self, message: Message) -> bytes:
        """The command and header lines of a MESSAGE, but for `subscription` and `ack`."""
        if (message.correlation_id is not None or message.redelivery_count
                or message.reply_to is not None or message.type is not None
                or message.original_destination is not None
                or "content-length" in message.properties):
            return self._full_head(message)
        # the usual message (only the fields every message has, and properties): the lines
        # _full_head writes, in the same order, formatted at once
        version = self.version
        dest = message.destination
        dest_text = self._dest_text.get(dest)
        if dest_text is None:  # (deliver() sends none of this connection's temporary ones here)
            if len(self._dest_text) >= 256:
                self._dest_text.clear()
            dest_text = self._dest_text[dest] = _escaped(self.stomp_name(dest), version)
        text = ("MESSAGE\nmessage-id:%s\ndestination:%s\nexpires:%s\npriority:%s\ntimestamp:%s\n"
                "%s") % (
            _escaped(message.message_id, version), dest_text,
            message.expires, message.priority, message.timestamp,
            "persistent:true\n" if message.persistent else "")
        properties = message.properties
        if properties:
            text += header_lines([(k, v if type(v) is str else java_text(v))
                                  for k, v in properties.items()
                                  if k not in _NOT_ECHOED and k not in _STANDARD_ECHOED
                                  and (k != "persistent" or not message.persistent)], version)
        if message.is_bytes or b"\x00" in message.body:
            text += "content-length:%d\n" % len(message.body)
        return text.encode("utf-8")

    def _full_head(self, message: Message) -> bytes:
        """_message_head for any message."""
        h = self._standard_headers(message)
        for k, v in message.properties.items():
            if k not in _NOT_ECHOED and k not in h:
                h[k] = v if type(v) is str else java_text(v)
        if message.is_bytes or b"\x00" in message.body:
            h["content-length"] = str(len(message.body))
        return ("MESSAGE\n" + header_lines(h, self.version)).encode("utf-8")

    def _standard_headers(self, message: Message) -> dict:
        h = {"message-id": message.message_id,
             "destination": self.stomp_name(message.destination)}
        if message.correlation_id is not None:
            h["correlation-id"] = message.correlation_id
        h["expires"] = str(message.expires)
        if message.redelivery_count:
            h["redelivered"] = "true"
        h["priority"] = str(message.priority)
        if message.reply_to is not None:
            rt = message.reply_to
            h["reply-to"] = self.stomp_name(rt) if isinstance(rt, Destination) else rt
        h["timestamp"] = str(message.timestamp)
        if message.type is not None:
            h["type"] = message.type
        if message.original_destination is not None:
            h["original-destination"] = self.stomp_name(message.original_destination)
        if message.persistent:
            h["persistent"] = "true"
        return h

    def _message_frame(self, consumer: Consumer, message: Message, ack_id: str | None) -> bytes:
        """A MESSAGE frame built afresh (map messages, temporary destination names, 1.0
        subscriptions without id)."""
        h = self._standard_headers(message)
        h["subscription"] = consumer.subscription_id
        if ack_id is not None and self.version == "1.2" and consumer.ack_mode != AUTO:
            h["ack"] = ack_id
        for k, v in message.properties.items():
            if k not in _NOT_ECHOED:
                h.setdefault(k, v if type(v) is str else java_text(v))
        body = message.body
        if message.map_body is not None:
            body, h["transformation"] = render_map(message.map_body, consumer.transformation)
        elif consumer.transformation is not None and not message.is_bytes:
            h["transformation"] = consumer.transformation  # ActiveMQ names it on text too
        if message.is_bytes or b"\x00" in body:
            h["content-length"] = str(len(body))
        if consumer.implicit_id:
            del h["subscription"]  # ActiveMQ: a 1.0 SUBSCRIBE without id gets none back
        return serialize("MESSAGE", h, body, self.version)

    def _emit(self, data: bytes) -> None:
        """A MESSAGE frame: held back while this connection's own frame is being answered,
        and behind a RECEIPT not yet sent (a persistent SEND's RECEIPT waits for the disk)."""
        if self._held is not None:
            self._held.append(data)
        elif self._barrier is not None:
            self._barrier[3].append(data)
        else:
            self._send(data)
            return
        self._held_bytes += len(data)
        if self._held_bytes >= _WRITES.FLUSH_AT and self.writable:
            # held frames are not in the socket's buffer, so its flow control cannot stop
            # the dispatch: stop it here until they are out (a SUBSCRIBE to a long queue)
            self.writable = False
            self._holding = True

    def _emit_held(self, held: list) -> None:
        """The frame is answered: what it held back goes out (or behind a RECEIPT still
        owed, where it is counted again)."""
        self._held_bytes -= sum(map(len, held))
        for data in held:
            self._emit(data)
        self._released()

    def _released(self) -> None:
        """Frames held back went out: below FLUSH_AT held, dispatch resumes."""
        if self._holding and self._held_bytes < _WRITES.FLUSH_AT:
            self._holding = False
            if not self._paused:
                self.resume_writing()

    def _write(self, command: str, headers, body: bytes = b"") -> None:
        self._send(serialize(command, headers, body, self.version))

    def _send(self, data: bytes) -> None:
        if self.closing:
            return
        if _WRITES.depth:
            if self._out is None:
                self._out = [data]
                self._out_size = len(data)
                _WRITES.sessions.append(self)
            else:
                self._out.append(data)
                self._out_size += len(data)
                if self._out_size >= _WRITES.FLUSH_AT:
                    self._flush()
            return
        self._last_write = self.clock.seconds()
        self.link.write(data)

    def _flush(self) -> None:
        """Write what was gathered for this connection (_Writes)."""
        out = self._out
        if out is None:
            return
        self._out = None
        self._last_write = self.clock.seconds()
        write_many = getattr(self.link, "write_many", None)
        if write_many is not None:
            write_many(out)
        else:
            for data in out:
                self.link.write(data)

    def _error(self, text: str, receipt: str | None = None, fatal: bool = False) -> None:
        headers = {"content-type": "text/plain"}
        if receipt is not None:
            headers["receipt-id"] = receipt
        headers["message"] = text
        # before CONNECTED no version is agreed: headers go unescaped, as STOMP 1.0 (ActiveMQ)
        self._send(serialize("ERROR", headers, (text + "\n").encode("utf-8"),
                             self.version if self.connected else "1.0"))
        if fatal:
            self._close()

    def _receipt(self, receipt: str | None, done: defer.Deferred | None = None,
                 count: int = 1) -> None:
        """Send RECEIPT once `done` fires, keeping receipts in the order of their frames.

        Frames without a receipt matter only if they fail (an ERROR, in order): those whose
        Deferreds have not fired yet share one entry per run of them (one list, and one flush
        when the last of them is done, instead of one of each per SEND)."""
        if receipt is None:
            if done is None:
                return
            if not done.called:
                receipts = self._receipts
                entry = receipts[-1] if receipts else None
                if entry is not None and len(entry) == 5 and not entry[1]:
                    entry[4] += count  # a run of frames without receipts: more in it
                else:
                    entry = [None, False, None, [], count]
                    receipts.append(entry)
                done.addBoth(self._part_done, entry, count)
                return
            if not isinstance(getattr(done, "result", None), failure.Failure):
                return  # done, and nothing to tell: nothing to order either
            # failed already: an ERROR for each of them, after what is still owed
            entry = [None, True, None, [], 0]
            done.addErrback(lambda f: entry.__setitem__(2, [self._failure_text(f)] * count))
            self._receipts.append(entry)
            self._flush_receipts()
            return
        entry = [receipt, done is None or done.called, None, []]  # + MESSAGEs to send after it
        if done is not None and not done.called:
            def fired(result, entry=entry):
                entry[1] = True
                if hasattr(result, "check"):  # a Failure
                    entry[2] = self._failure_text(result)
                self._flush_receipts()
            done.addBoth(fired)
        elif done is not None:
            # already fired: a failure is still surfaced
            done.addErrback(lambda f, entry=entry: entry.__setitem__(2, self._failure_text(f)))
        self._receipts.append(entry)
        if receipt is not None:
            self._barrier = entry
        self._flush_receipts()

    def _part_done(self, result, entry: list, count: int = 1) -> None:
        """`count` of a run of frames without receipts are done (see _receipt); each that
        failed gets an ERROR of its own."""
        if isinstance(result, failure.Failure):
            texts = [self._failure_text(result)] * count
            entry[2] = texts if entry[2] is None else entry[2] + texts
        entry[4] -= count
        if not entry[4]:
            entry[1] = True
            self._flush_receipts()

    def _failure_text(self, failure) -> str:
        if failure.check(defer.FirstError):
            failure = failure.value.subFailure
        if failure.check(BrokerError, ScheduleError, DestinationError, ResourceLimitError):
            return str(failure.value)
        if failure.check(StoreWriteError):  # the store logs it (loudly, once)
            return "The broker could not store this durably: %s" % failure.value
        log.failure("store write for {connection}", failure, connection=self.connection_id)
        return "The broker could not store this durably: %s" % failure.getErrorMessage()

    def _flush_receipts(self) -> None:
        while self._receipts and self._receipts[0][1]:
            entry = self._receipts.popleft()
            if entry is self._barrier:
                self._barrier = None  # and no entry after it holds MESSAGEs
            receipt, failure, after = entry[0], entry[2], entry[3]
            if type(failure) is list:  # a run of frames without receipts (see _receipt)
                for text in failure:
                    self._error(text)
            elif failure is not None:
                self._error(failure, receipt=receipt)
            elif receipt is not None:
                self._write("RECEIPT", {"receipt-id": receipt})
            for data in after:
                self._held_bytes -= len(data)
                self._send(data)
        self._released()
        if not self._receipts and self._after_receipts:
            callbacks, self._after_receipts = self._after_receipts, []
            for cb in callbacks:
                cb()

    def _when_receipts_sent(self, callback) -> None:
        self._after_receipts.append(callback)
        self._flush_receipts()

    # == flow control and teardown ==========================================================
    def _block(self, frame, usage, message) -> None:
        """A limit is full: stop reading this producer until there is room, then handle the
        SEND again; frames already read wait behind it, in order (ActiveMQ blocks the
        producer too, but for ever by default; we give up after --send-fail-timeout)."""
        self._waiting = []
        self._blocked = True
        self.link.pause_reading()
        d = self._flow_wait = self.broker.flow.wait(usage, message.destination.stomp(),
                                                    self.connection_id)
        d.addCallbacks(self._unblock, self._unblock, callbackArgs=(frame,),
                       errbackArgs=(frame,))

    def _unblock(self, result, frame) -> None:
        waiting, self._waiting = self._waiting, None
        self._blocked = False
        self._flow_wait = None
        if self.closing:
            return
        if isinstance(result, failure.Failure):
            self._error(str(result.value), receipt=frame.headers.get("receipt"))
        else:
            self._handle(frame)  # checks the limit again: it may wait once more
        self._replay(waiting)
        if self._waiting is None and not self.closing:
            self.link.resume_reading()

    def pause_writing(self) -> None:
        self._paused = True
        self.writable = False

    def resume_writing(self) -> None:
        self._paused = False
        if self.closing or self._holding:
            return  # nothing more goes out (a delivery now would be lost), or not yet
        self.writable = True
        with _WRITES:
            for consumer in list(self.subscriptions.values()):
                for source in list(consumer.sources):
                    source.wake()

    def shutdown(self) -> None:
        """The broker is stopping: read nothing more, deliver nothing more, send the
        RECEIPTs still due (their writes are finishing), then close the socket cleanly, as
        ActiveMQ does (a reset could lose a RECEIPT in flight and make the client re-send)."""
        self.link.pause_reading()
        self.writable = False
        self._holding = False  # and nothing is to resume the dispatch
        self._when_receipts_sent(self._close)

    def _close(self) -> None:
        if self.closing:
            return
        self._flush()
        self.closing = True
        self.writable = False
        self.link.close()

    def _release(self) -> None:
        """Give back everything this connection holds in the broker."""
        for tx in self.transactions.values():
            self.broker.rollback(tx)
        self.transactions.clear()
        subs, self.subscriptions = self.subscriptions, {}
        for consumer in subs.values():
            # all closed first: what one gives back must not go to another of this connection
            consumer.closed = True
        for consumer in subs.values():
            self.broker.unsubscribe(consumer)
        if self.connected:
            self.broker.disconnect(self, self.client_id)
            self.connected = False

    def connection_lost(self) -> None:
        self.closing = True
        self.writable = False
        self._out = None  # nowhere to go
        if self._flow_wait is not None:
            self._flow_wait.cancel()  # a producer that went away waits for nothing
        for timer in (self._read_timer, self._write_timer, self._connect_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._release()


# the headers of _message_head's usual MESSAGE (a property of the same name is not repeated)
_STANDARD_ECHOED = frozenset(("message-id", "destination", "expires", "priority", "timestamp"))


def _escaped(value: str, version: str) -> str:
    """One header value escaped for `version` (what header_lines does for all of them)."""
    if version == "1.0":
        return value
    if "\\" in value or "\n" in value or "\r" in value:
        return escape_header(value, version)
    return value.replace(":", "\\c")


def h_join(session: StompSession, destinations) -> str:
    return ",".join(session.stomp_name(d) for d in destinations)


_LATE_ACKS = 10000  # ids remembered for late ACKs after an UNSUBSCRIBE (the newest)
_BROWSED = "browsed"  # _late_acks' mark of an id a browser showed


def _int_header(headers, name: str, default: int, value: str | None = None) -> int:
    if value is None:
        value = headers.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value.strip())
    except ValueError:
        raise ProtocolError("Invalid %s header %r: expected an integer" % (name, _clip(value)))


def _prefetch(value: str | None, default: int) -> int:
    """activemq.prefetchSize: ActiveMQ ignores a value that is not a number (its default
    prefetch, without a word), so do we; 0 or less is 1 here (ActiveMQ's prefetch 0 means
    "pull", which STOMP cannot do: it would never dispatch)."""
    try:
        return int(value.strip()) if value is not None and value.strip() else default
    except ValueError:
        log.warn("STOMP SUBSCRIBE with activemq.prefetchSize {value!r}, not a number: the "
                 "default, {default} (as ActiveMQ)", value=_clip(value), default=default)
        return default


def _consumer_priority(value: str | None) -> int:
    """activemq.priority: a Java byte; ActiveMQ ignores a value it cannot set (so do we)."""
    try:
        priority = int(value.strip()) if value is not None else 0
    except ValueError:
        return 0
    return priority if -128 <= priority <= 127 else 0


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
