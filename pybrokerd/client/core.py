"""The sans-I/O heart of the STOMP failover client: state and frames, no sockets, no Twisted.

One :class:`ClientCore` lives as long as the user's client object, across any number of
connections.  The glue (``twisted_client`` and ``blocking``) owns the socket: it calls
:meth:`ClientCore.connection_made` and writes the bytes :meth:`take_output` hands it, feeds
what it reads to :meth:`data_received` and acts on the events returned, and calls
:meth:`connection_lost` when the socket dies.  What the core remembers makes a failover
invisible to the application:

* every subscription (same id, ack mode, selector, durable name), re-sent after a reconnect;
* every send that asked for a receipt and has not had it, re-sent after a reconnect in the
  original order, bounded by ``max_cache_size`` bytes (the sender waits when it is full);
* duplicate suppression: each tracked send carries ``pybrokerd-producer`` (this client's
  producer id) and ``pybrokerd-seq`` (1, 2, 3, ...); pybrokerd remembers the highest
  sequence per producer durably and drops a re-sent duplicate while still sending its
  receipt.  On the consuming side, an audit of recent message ids per subscription drops
  a message delivered again after a failover (its ack was lost with the old connection);
* acks of messages delivered on an old connection are never sent to the new broker; the
  redelivered copy is matched by message id and the application's ack goes to it.
"""

from __future__ import annotations

import collections
import itertools
import random
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional

from pybrokerd.client.url import attempt_limit, reconnect_delays
from pybrokerd.protocols.stomp.codec import Frame, FrameParser, Limits, serialize

__all__ = [
    "ClientError", "ConnectionLost", "ConnectFailed", "BrokerErrorFrame", "FailoverTimeout",
    "TransactionRolledBack", "TransactionInDoubt",
    "ClientCore", "Message", "Subscription", "Connected", "Delivered", "Receipted",
    "ErrorReceived", "PRODUCER_ID", "PRODUCER_SEQ", "endpoint_order", "ConnectPlan",
]

PRODUCER_ID = "pybrokerd-producer"
PRODUCER_SEQ = "pybrokerd-seq"
HEARTBEAT_GRACE = 1.5      # a peer may be this many intervals late before we call it dead
AUDIT_WINDOW = 65536       # audit keys remembered per subscription (two per message)


class ClientError(Exception):
    """Base class of the client's errors; str(e) is one line a human can act on."""


class ConnectionLost(ClientError):
    """The connection went away before the operation was confirmed."""


class ConnectFailed(ClientError):
    """No broker could be reached (or the broker refused the CONNECT)."""


class TransactionRolledBack(ConnectionLost):
    """The connection died before COMMIT was sent: nothing of the transaction happened."""


class TransactionInDoubt(ConnectionLost):
    """The connection died after COMMIT was sent and before its RECEIPT: the broker may or
    may not have committed (JMS calls this an in-doubt outcome)."""


class FailoverTimeout(ClientError):
    """An operation waited longer than the failover ``timeout`` for a reconnection."""


class BrokerErrorFrame(ClientError):
    """The broker answered with an ERROR frame."""

    def __init__(self, frame: Frame):
        self.frame = frame
        text = frame.headers.get("message", "").strip()
        body = frame.body.decode("utf-8", "replace").strip()
        if body and body != text:
            first = body.splitlines()[0]
            text = "%s: %s" % (text, first) if text else first
        super().__init__(text or "ERROR frame without a message")


@dataclass
class Subscription:
    id: str
    destination: str
    ack: str
    headers: dict
    handler: Optional[Callable] = None   # called with each Message (Twisted face)
    # message id -> "acked" | the Message the application holds unacked
    audit: "collections.OrderedDict[str, object]" = field(default_factory=collections.OrderedDict)
    # message id -> Message delivered to the application and not acked yet, in order
    unacked: "collections.OrderedDict[str, Message]" = field(default_factory=collections.OrderedDict)


class Message:
    """A MESSAGE delivered to the application."""

    __slots__ = ("headers", "body", "subscription", "_client", "_generation", "_ack_id",
                 "_acked", "_keys", "__weakref__")

    def __init__(self, headers, body, subscription, client, generation, ack_id):
        self.headers = headers
        self.body = body
        self.subscription = subscription
        self._client = client
        self._generation = generation
        self._ack_id = ack_id
        self._acked = False
        self._keys = ()  # its keys in the subscription's duplicate audit

    @property
    def destination(self) -> str:
        return self.headers.get("destination", "")

    @property
    def message_id(self) -> str:
        return self.headers.get("message-id", "")

    @property
    def redelivered(self) -> bool:
        return self.headers.get("redelivered", "false") == "true"

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def ack(self, transaction=None):
        """Acknowledge (a no-op for auto-ack subscriptions)."""
        return self._client.ack(self, transaction=transaction)

    def nack(self, transaction=None):
        return self._client.nack(self, transaction=transaction)

    def __repr__(self):
        return "<Message %s on %s: %r>" % (self.message_id, self.destination, self.body[:40])


# events returned by data_received
@dataclass
class Connected:
    headers: dict


@dataclass
class Delivered:
    message: Message


@dataclass
class Receipted:
    receipt_id: str
    tag: object   # what the caller gave when the receipt was requested


@dataclass
class ErrorReceived:
    error: BrokerErrorFrame
    receipt_tag: object   # the tag of the operation it answers, if any
    fatal: bool           # the broker closes the connection after it


def endpoint_order(endpoints, randomize, failed=None, rng=random):
    """The order to try the brokers in: shuffled if randomize; the one whose connection
    just failed goes last (as ActiveMQ's FailoverTransport does)."""
    order = list(endpoints)
    if randomize and len(order) > 1:
        rng.shuffle(order)
    if failed is not None and failed in order and len(order) > 1:
        order.remove(failed)
        order.append(failed)
    return order


WARN_AFTER_ATTEMPTS = 10  # as ActiveMQ's warnAfterReconnectAttempts


class ConnectPlan:
    """One walk of a (failover) URL until a broker answers: the order of the brokers on each
    pass, the delay between passes, and when to give up.  Both faces of the client drive it:

        plan = ConnectPlan(url, connected_before, failed_endpoint)
        while True:
            for endpoint in plan.endpoints():
                ...try it; plan.failed(endpoint, error) if it fails...
            delay = plan.next_delay()      # None: give up, raise plan.error()
            if plan.warning(): log it
            ...wait delay seconds...
    """

    def __init__(self, url, connected_before: bool, failed_endpoint=None, clock=None):
        import time
        self.url = url
        self.options = url.options
        self.connected_before = connected_before
        self.failed_endpoint = failed_endpoint
        self.clock = clock or time.monotonic
        self.limit = attempt_limit(self.options, connected_before) if url.failover else 0
        self.delays = reconnect_delays(self.options)
        self.started = self.clock()
        self.attempts = 0
        self.errors: list[str] = []

    def endpoints(self):
        return endpoint_order(self.url.endpoints, self.options.randomize and self.url.failover,
                              self.failed_endpoint)

    def failed(self, endpoint, error) -> None:
        self.errors.append("%s:%d: %s" % (endpoint.host, endpoint.port, error))

    @staticmethod
    def refused(endpoint, error) -> "ConnectFailed":
        """The broker answered CONNECT with an ERROR: final, no retrying."""
        return ConnectFailed("%s:%d refused the connection: %s" % (endpoint.host, endpoint.port,
                                                                   error))

    def next_delay(self):
        """Seconds to wait before the next pass, or None to give up."""
        self.attempts += 1
        if self.limit is not None and self.attempts > self.limit:
            return None
        if (not self.connected_before and self.options.startup_timeout >= 0
                and (self.clock() - self.started) * 1000 >= self.options.startup_timeout):
            return None
        return next(self.delays)

    def warning(self):
        if self.attempts % WARN_AFTER_ATTEMPTS:
            return None
        return ("still no broker after %d attempts (%s); retrying (set maxReconnectAttempts "
                "or startupTimeout to give up)" % (self.attempts, self.last_errors()))

    def last_errors(self) -> str:
        return "; ".join(self.errors[-len(self.url.endpoints):])

    def error(self) -> "ConnectFailed":
        return ConnectFailed("could not connect to %s after %d attempt(s): %s" % (
            ", ".join("%s:%d" % (e.host, e.port) for e in self.url.endpoints), self.attempts,
            self.last_errors()))


class _Tracked:
    __slots__ = ("data", "tag", "size")

    def __init__(self, data, tag):
        self.data = data
        self.tag = tag
        self.size = len(data)


class ClientCore:
    def __init__(self, *, login=None, passcode=None, host=None, client_id=None,
                 heartbeats=(10000, 10000), max_cache_size=131072, dedup=True,
                 headers=None, limits: Limits | None = None):
        self.login = login
        self.passcode = passcode
        self.host = host
        self.client_id = client_id
        self.heartbeats = heartbeats
        self.max_cache_size = max_cache_size
        self.dedup = dedup
        self.extra_connect_headers = dict(headers or {})
        self.limits = limits or Limits()
        self.producer_id = "ID:pybroker-%s" % uuid.uuid4().hex
        self._producer_seq = itertools.count(1)
        self._receipt_seq = itertools.count(1)
        self._sub_seq = itertools.count(1)
        self.subscriptions: "collections.OrderedDict[str, Subscription]" = collections.OrderedDict()
        self.tracked: "collections.OrderedDict[str, _Tracked]" = collections.OrderedDict()
        self.tracked_bytes = 0
        self._receipts: dict[str, object] = {}  # this connection's untracked receipts -> tag
        self.generation = 0
        self.connected = False      # CONNECTED received on the current connection
        self.version = "1.2"
        self.server = ""
        self.session = ""
        self.send_interval = 0.0    # seconds between our heart-beats (0: none)
        self.read_timeout = 0.0     # seconds of silence after which the broker is dead (0: never)
        self.duplicates_dropped = 0
        self._out: list[bytes] = []
        self._parser = FrameParser(self.limits)
        self._transactions: set[str] = set()
        self.owner = None           # the glue object whose ack()/nack() Message calls

    # -- the connection's life ---------------------------------------------------------
    def connection_made(self, host: str) -> None:
        """A new socket is up: queue the CONNECT frame (nothing else until CONNECTED)."""
        self.generation += 1
        self.connected = False
        self._out = []
        self._receipts = {}
        self._parser = FrameParser(self.limits)
        self._parser.version = "1.0"
        headers = {"accept-version": "1.1,1.2", "host": self.host or host,
                   "heart-beat": "%d,%d" % self.heartbeats}
        if self.login is not None:
            headers["login"] = self.login
        if self.passcode is not None:
            headers["passcode"] = self.passcode
        if self.client_id is not None:
            headers["client-id"] = self.client_id
        headers.update(self.extra_connect_headers)
        self._out.append(serialize("CONNECT", headers, b"", version="1.0"))

    def connection_lost(self) -> list:
        """The socket died.  -> the tags of untracked operations that now will never be
        receipted (the glue fails them); tracked sends stay for the next connection."""
        self.connected = False
        lost = list(self._receipts.values())
        self._receipts = {}
        self._transactions.clear()
        return lost

    def take_output(self) -> bytes:
        data, self._out = b"".join(self._out), []
        return data

    def heartbeat(self) -> bytes:
        return b"\n"

    # -- input -------------------------------------------------------------------------
    def data_received(self, data: bytes) -> list:
        """Parse bytes from the broker. -> events.  Raises codec.FrameError on garbage."""
        self._parser.feed(data)
        events = []
        while True:
            frame = self._parser.next_frame()
            if frame is None:
                return events
            handler = getattr(self, "_on_" + frame.command.lower(), None)
            if handler is not None:
                event = handler(frame)
                if event is not None:
                    events.append(event)

    def _on_connected(self, frame):
        h = frame.headers
        self.version = h.get("version", "1.0")
        self._parser.version = self.version
        self.server = h.get("server", "")
        self.session = h.get("session", "")
        try:
            sx, sy = (int(v) for v in h.get("heart-beat", "0,0").split(","))
        except ValueError:
            sx = sy = 0
        cx, cy = self.heartbeats
        self.send_interval = max(cx, sy) / 1000.0 if cx and sy else 0.0
        self.read_timeout = max(cy, sx) / 1000.0 * HEARTBEAT_GRACE if cy and sx else 0.0
        self.connected = True
        self._replay()
        return Connected(dict(h))

    def _replay(self):
        """After CONNECTED: re-subscribe everything, then re-send every unreceipted send."""
        for sub in self.subscriptions.values():
            self._out.append(self._subscribe_frame(sub))
        for receipt_id, tracked in self.tracked.items():
            self._out.append(tracked.data)

    def _on_message(self, frame):
        h = frame.headers
        sub = self.subscriptions.get(h.get("subscription", ""))
        if sub is None:
            return None  # unsubscribed meanwhile
        ack_id = h.get("ack") if self.version == "1.2" else h.get("message-id")
        message_id = h.get("message-id", "")
        keys = ()
        seen = None
        if self.dedup:
            # the same message comes back with its id (redelivered by the new master) or, when
            # the dead master had dispatched it before writing it, as the producer's re-send:
            # a new id but the same producer and sequence
            producer, sequence = h.get(PRODUCER_ID), h.get(PRODUCER_SEQ)
            keys = tuple(k for k in (message_id, (producer, sequence) if producer and sequence
                                     else None) if k)
            for key in keys:
                seen = sub.audit.get(key)
                if seen is not None:
                    break
        if seen is not None:
            # delivered again after a failover: the application already has it
            self.duplicates_dropped += 1
            if isinstance(seen, Message) and not seen._acked:
                seen._generation, seen._ack_id = self.generation, ack_id  # its ack goes here
            elif sub.ack == "client-individual":
                self._out.append(self._ack_frame("ACK", sub, ack_id, message_id, None))
            elif sub.ack == "client" and not any(
                    m._generation == self.generation for m in sub.unacked.values()):
                # cumulative: safe only if nothing unacked precedes it on this connection,
                # otherwise the application's next ack covers it
                self._out.append(self._ack_frame("ACK", sub, ack_id, message_id, None))
            return None
        message = Message(dict(h), frame.body, sub.id, self.owner, self.generation, ack_id)
        if sub.ack != "auto":
            sub.unacked[message_id] = message
        message._keys = keys
        for key in keys:
            sub.audit[key] = "acked" if sub.ack == "auto" else message
        while len(sub.audit) > AUDIT_WINDOW:
            sub.audit.popitem(last=False)
        return Delivered(message)

    def _on_receipt(self, frame):
        receipt_id = frame.headers.get("receipt-id", "")
        tracked = self.tracked.pop(receipt_id, None)
        if tracked is not None:
            self.tracked_bytes -= tracked.size
            return Receipted(receipt_id, tracked.tag)
        if receipt_id in self._receipts:
            return Receipted(receipt_id, self._receipts.pop(receipt_id))
        return None

    def _on_error(self, frame):
        receipt_id = frame.headers.get("receipt-id")
        tag = None
        if receipt_id is not None:
            tracked = self.tracked.pop(receipt_id, None)
            if tracked is not None:
                self.tracked_bytes -= tracked.size
                tag = tracked.tag
            else:
                tag = self._receipts.pop(receipt_id, None)
        error = BrokerErrorFrame(frame)
        # before CONNECTED, or a framing error: the broker closes the connection after it
        fatal = not self.connected or receipt_id is None
        return ErrorReceived(error, tag, fatal)

    # -- output ------------------------------------------------------------------------
    def _receipt(self, tag) -> str:
        receipt_id = "r-%d" % next(self._receipt_seq)
        self._receipts[receipt_id] = tag
        return receipt_id

    def cache_full(self, size: int) -> bool:
        """Would tracking `size` more bytes exceed the cache?  (One send always fits.)"""
        return bool(self.tracked) and self.tracked_bytes + size > self.max_cache_size

    def send(self, destination: str, body: bytes, headers=None, *, persistent=False,
             receipt=True, transaction=None, tag=None) -> str | None:
        """Queue a SEND.  With a receipt (and outside a transaction) it is tracked: re-sent
        after a failover until receipted, stamped for duplicate suppression.
        -> the receipt id, or None."""
        h = {"destination": destination}
        if persistent:
            h["persistent"] = "true"
        if headers:
            h.update({k: str(v) for k, v in headers.items()})
        if isinstance(body, str):
            body = body.encode("utf-8")
            h.setdefault("content-type", "text/plain;charset=utf-8")
        if transaction is not None:
            h["transaction"] = transaction
        receipt_id = None
        if receipt:
            receipt_id = "s-%d" % next(self._receipt_seq)
            h["receipt"] = receipt_id
        tracked = receipt and transaction is None
        if tracked and self.dedup:
            h[PRODUCER_ID] = self.producer_id
            h[PRODUCER_SEQ] = str(next(self._producer_seq))
        data = serialize("SEND", h, body, version=self.version)
        if tracked:
            entry = self.tracked[receipt_id] = _Tracked(data, tag)
            self.tracked_bytes += entry.size
        elif receipt:
            self._receipts[receipt_id] = tag
        if self.connected:
            self._out.append(data)
        return receipt_id

    def subscribe(self, destination: str, *, ack="auto", headers=None, id=None,
                  handler=None, receipt_tag=None) -> tuple[Subscription, str | None]:
        if ack not in ("auto", "client", "client-individual"):
            raise ValueError("ack must be auto, client or client-individual, not %r" % (ack,))
        sub_id = id or "sub-%d" % next(self._sub_seq)
        if sub_id in self.subscriptions:
            raise ValueError("subscription id %r is already in use" % sub_id)
        sub = Subscription(sub_id, destination, ack, {k: str(v) for k, v in (headers or {}).items()},
                           handler)
        self.subscriptions[sub_id] = sub
        receipt_id = None
        if self.connected:
            receipt_id = self._receipt(receipt_tag) if receipt_tag is not None else None
            self._out.append(self._subscribe_frame(sub, receipt_id))
        return sub, receipt_id

    def _subscribe_frame(self, sub: Subscription, receipt_id=None) -> bytes:
        h = dict(sub.headers)
        h.update({"destination": sub.destination, "id": sub.id, "ack": sub.ack})
        if receipt_id is not None:
            h["receipt"] = receipt_id
        return serialize("SUBSCRIBE", h, b"", version=self.version)

    def unsubscribe(self, sub_id: str, receipt_tag=None) -> str | None:
        sub = self.subscriptions.pop(sub_id, None)
        if sub is None or not self.connected:
            return None
        h = {"id": sub_id}
        if sub.headers.get("activemq.subscriptionName"):
            h["activemq.subscriptionName"] = sub.headers["activemq.subscriptionName"]
        receipt_id = None
        if receipt_tag is not None:
            receipt_id = h["receipt"] = self._receipt(receipt_tag)
        self._out.append(serialize("UNSUBSCRIBE", h, b"", version=self.version))
        return receipt_id

    def _ack_frame(self, command, sub, ack_id, message_id, transaction, receipt_id=None):
        if self.version == "1.2":
            h = {"id": ack_id}
        else:
            h = {"message-id": message_id, "subscription": sub.id}
        if transaction is not None:
            h["transaction"] = transaction
        if receipt_id is not None:
            h["receipt"] = receipt_id
        return serialize(command, h, b"", version=self.version)

    def acknowledge(self, message: Message, command="ACK", transaction=None,
                    receipt_tag=None) -> tuple[bool, str | None]:
        """Queue the ACK/NACK of a delivered message.  -> (sent, receipt id).  Not sent when
        the message came on an older connection and has not been delivered again yet: the
        new broker redelivers it and the audit acks the copy then (for ACK) or hands it to
        the application again (for NACK)."""
        sub = self.subscriptions.get(message.subscription)
        if sub is None or sub.ack == "auto":
            return False, None
        if message._acked:
            return False, None
        if command == "NACK" and self.version == "1.0":
            raise ClientError("NACK needs STOMP 1.1 or later")
        message._acked = True
        audit = sub.audit if self.dedup else {}
        if command == "ACK" and sub.ack == "client":
            # cumulative: what was delivered before it on the same connection is acked too
            kept = []
            while sub.unacked:
                key, held = sub.unacked.popitem(last=False)
                if held is message:
                    break
                if held._generation == message._generation:
                    held._acked = True
                    for k in held._keys:
                        if k in audit:
                            audit[k] = "acked"
                else:
                    kept.append((key, held))
            for key, held in reversed(kept):
                sub.unacked[key] = held
                sub.unacked.move_to_end(key, last=False)
        else:
            sub.unacked.pop(message.message_id, None)
        for key in message._keys:
            if command == "ACK":
                if key in audit:
                    audit[key] = "acked"
            else:
                audit.pop(key, None)  # a NACKed message may rightly come back
        if message._generation != self.generation or not self.connected:
            return False, None
        receipt_id = self._receipt(receipt_tag) if receipt_tag is not None else None
        self._out.append(self._ack_frame(command, sub, message._ack_id, message.message_id,
                                         transaction, receipt_id))
        return True, receipt_id

    def begin(self, transaction: str) -> None:
        self._transactions.add(transaction)
        self._out.append(serialize("BEGIN", {"transaction": transaction}, b"", version=self.version))

    def end_transaction(self, command: str, transaction: str, receipt_tag) -> str | None:
        """COMMIT or ABORT.  -> receipt id, or None if the transaction died with its
        connection (the glue reports it rolled back)."""
        if transaction not in self._transactions:
            return None
        self._transactions.discard(transaction)
        receipt_id = self._receipt(receipt_tag)
        self._out.append(serialize(command, {"transaction": transaction, "receipt": receipt_id},
                                   b"", version=self.version))
        return receipt_id

    def disconnect(self, receipt_tag) -> str | None:
        if not self.connected:
            return None
        receipt_id = self._receipt(receipt_tag)
        self._out.append(serialize("DISCONNECT", {"receipt": receipt_id}, b"", version=self.version))
        return receipt_id
