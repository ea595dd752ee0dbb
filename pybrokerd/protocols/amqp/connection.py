"""One AMQP 1.0 connection: proton's engine (Connection, Transport, Collector) pumped by hand,
and its links turned into broker producers and consumers.

No proton reactor and no proton I/O: bytes come in through `data_received`, go through our
SASL layer (sasl.py) and then `Transport.push`; the collector's events are handled here; the
transport's output is handed to `link.write` (the Twisted glue).  Deliveries the broker makes
to this connection's consumers are written out on the next turn of the clock, batched.

Mapping (docs/amqp.md): a sender link from the client is a producer (link credit is how many
messages it may send before we say more; a durable message is accepted, settled, only once the
store says it is durable); a receiver link is a consumer (its credit is the prefetch; accepted =
ACK, released = back to the queue, modified = back with the redelivery count raised,
rejected = dead-letter queue; a pre-settled link is auto-ack).  A topic receiver whose source
terminus is durable is a durable subscription named by the container id and the link name, as
ActiveMQ does; closing (not detaching) that link removes it.  Local transactions go through
the coordinator link.
"""

from __future__ import annotations

import itertools

from proton import Collector, Condition, Connection, Delivery, Described, Link, Terminus, \
    Transport, symbol, ulong
from proton import Message as AmqpMessage
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pybrokerd.broker.core import BrokerError, NotAuthorized, Transaction
from pybrokerd.broker.destination import TEMP_QUEUE, DestinationError
from pybrokerd.broker.interfaces import IConsumerSession
from pybrokerd.broker.queue import AUTO, CLIENT_INDIVIDUAL, Consumer
from pybrokerd.broker.selector import SelectorError, compile_selector
from pybrokerd.broker.usage import ResourceLimitError
from pybrokerd.protocols.amqp import mapping
from pybrokerd.protocols.amqp.sasl import SASL_HEADER, SaslError, SaslServer
from pybrokerd.security import SecurityError
from scheduler.scheduler import ScheduleError, has_scheduling_headers
from scheduler.scheduler import parse as parse_schedule
from stores.batching import StoreWriteError

log = Logger()

CREDIT = 1000              # what a producer link may send before it is given more (ActiveMQ: 1000)
IDLE_TIMEOUT = 30.0        # seconds (ActiveMQ's AMQP default)
AUTH_FAILURE_DELAY = 0.5   # as STOMP: slows down password guessing
TRANSACTIONAL_STATE, DECLARED = 0x34, 0x33
ACCEPTED_CODE, REJECTED_CODE, RELEASED_CODE, MODIFIED_CODE = 0x24, 0x25, 0x26, 0x27
SELECTOR_FILTERS = ("apache.org:selector-filter:string", 0x0000468C00000004)


class AmqpConsumer(Consumer):
    """A consumer whose room is the link credit the client gave."""

    def __init__(self, link, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.link = link

    def has_credit(self) -> bool:
        return not self.closed and self.session.writable and self.link.credit > 0


def _condition_for(error) -> Condition:
    if isinstance(error, (SecurityError, NotAuthorized)):
        return Condition("amqp:unauthorized-access", str(error))
    if isinstance(error, ResourceLimitError):
        return Condition("amqp:resource-limit-exceeded", str(error))
    if isinstance(error, (DestinationError, SelectorError, ScheduleError)):
        return Condition("amqp:invalid-field", str(error))
    if isinstance(error, StoreWriteError):
        return Condition("amqp:internal-error", "The broker could not store this durably: %s"
                         % error)
    if isinstance(error, BrokerError):
        return Condition("amqp:precondition-failed", str(error))
    return Condition("amqp:internal-error", "Internal error (see the broker log)")


@implementer(IConsumerSession)
class AmqpConnection:
    protocol = "amqp"
    def __init__(self, broker, link, *, clock, id_generator, peer="unknown", refusal=None,
                 max_message_size=0):
        self.broker = broker
        self.refusal = refusal  # a connection limit was reached: say so on open, then close
        self.max_message_size = max_message_size
        self.link = link
        self.clock = clock
        self.peer = peer
        self.connection_id = id_generator.connection_id()
        self.writable = True
        self.closing = False
        self.principal = None
        self.client_id = None
        self.registered = False
        security = broker.security
        mechanisms = ["PLAIN"]
        if security.anonymous:
            mechanisms.append("ANONYMOUS")
        self.sasl = SaslServer(mechanisms)
        self.header = bytearray()  # the first 8 bytes decide: SASL or straight to AMQP
        self.engine_started = False
        self.connection = Connection()
        self.transport = Transport(Transport.SERVER)
        self.transport.idle_timeout = IDLE_TIMEOUT
        self.collector = Collector()
        self.transport.bind(self.connection)
        self.connection.collect(self.collector)
        self.consumers: dict = {}     # sender link -> AmqpConsumer
        self.producers: dict = {}     # receiver link -> destination or None (anonymous relay)
        self.held: dict = {}          # receiver link -> deliveries waiting for room
        self.browsers: dict = {}      # sender link -> messages still to show (queue browsers)
        self.flow_waits: dict = {}    # receiver link -> its wait for room (flow control)
        self.transactions: dict[bytes, Transaction] = {}
        self.coordinators = set()
        self._message_seq = itertools.count(1)
        self._ack_seq = itertools.count(1)
        self._txn_seq = itertools.count(1)
        self._flush_call = None
        self._tick_call = None
        self._in_engine = False

    @property
    def subscriptions(self) -> dict:
        """Link name -> Consumer, as a STOMP session's id -> Consumer (the admin API)."""
        return {c.subscription_id: c for c in self.consumers.values() if c is not None}

    # == bytes in ============================================================================
    def data_received(self, data: bytes) -> None:
        try:
            self._data_received(data)
        except Exception:
            log.failure("AMQP {connection} from {peer}", connection=self.connection_id,
                        peer=self.peer)
            self._close_socket()

    def _data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.engine_started:
            self._push(data)
            return
        if self.header is not None:
            # the protocol id in the header's 5th byte decides: 3 SASL, 0 AMQP without SASL
            self.header += data
            if len(self.header) < 5:
                return
            data, self.header = bytes(self.header), None
            if data[:4] == b"AMQP" and data[4] == 0:
                self._no_sasl(data)
                return
        try:
            events = self.sasl.feed(data)
        except SaslError as e:
            log.info("AMQP {connection} from {peer}: {error}", connection=self.connection_id,
                     peer=self.peer, error=e)
            self.link.write(SASL_HEADER)  # the header we speak, then goodbye (spec 2.2)
            self._close_socket()
            return
        for event in events:
            if event[0] == "write":
                self.link.write(event[1])
            elif event[0] == "authenticate":
                self._authenticate(*event[1:])
        if self.sasl.done and not self.engine_started:
            self._start_engine(self.sasl.rest)

    def _no_sasl(self, data: bytes) -> None:
        """A client that skips SASL: anonymous, if that is allowed."""
        if not self.broker.security.anonymous:
            log.info("AMQP {connection} from {peer}: no SASL and anonymous clients are refused",
                     connection=self.connection_id, peer=self.peer)
            self.link.write(SASL_HEADER)  # what the spec says a server that wants SASL answers
            self._close_socket()
            return
        self.principal = self.broker.security.authenticate_anonymous(None)
        self._start_engine(data)

    def _authenticate(self, mechanism, login, password) -> None:
        security = self.broker.security
        if mechanism == "ANONYMOUS":
            self._authenticated(security.authenticate_anonymous(None))
            return
        if not security.users:
            self._authenticated(security.authenticate_anonymous(login))
            return
        d = self.broker.authenticate(login, password)
        d.addCallbacks(self._authenticated, self._refused)

    def _authenticated(self, principal) -> None:
        if self.closing:
            return
        self.principal = principal
        self.link.write(self.sasl.outcome(True))
        self._continue_after_sasl()  # the AMQP header may be here already

    def _continue_after_sasl(self) -> None:
        try:
            self.sasl.feed(b"")
        except SaslError as e:
            log.info("AMQP {connection}: {error}", connection=self.connection_id, error=e)
            self._close_socket()
            return
        if self.sasl.done and not self.engine_started:
            self._start_engine(self.sasl.rest)

    def _refused(self, failure) -> None:
        if failure.check(SecurityError) is None:
            log.failure("authenticating AMQP {connection}", failure,
                        connection=self.connection_id)
        log.info("AMQP {connection} from {peer}: {reason}", connection=self.connection_id,
                 peer=self.peer, reason=failure.getErrorMessage())

        def answer():
            if not self.closing:
                self.link.write(self.sasl.outcome(False))
                self._close_socket()
        self.clock.callLater(AUTH_FAILURE_DELAY, answer)

    def _start_engine(self, data: bytes) -> None:
        self.engine_started = True
        self._push(data)

    def _push(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.closing:
            capacity = self.transport.capacity()
            if capacity < 0:
                break  # the transport's input side is closed
            if capacity == 0:
                self._pump()
                if self.transport.capacity() == 0:
                    break
                continue
            self.transport.push(bytes(view[:capacity]))
            view = view[capacity:]
            self._pump()
        if not data:
            self._pump()

    # == the engine ==========================================================================
    def _pump(self) -> None:
        """Handle every event the engine has, then write what it wants to send."""
        if self._in_engine:
            return
        self._in_engine = True
        try:
            while True:
                event = self.collector.peek()
                if event is None:
                    break
                try:
                    handler = getattr(self, event.type.method, None)
                    if handler is not None:
                        handler(event)
                except Exception:
                    log.failure("AMQP {connection}: handling {event}",
                                connection=self.connection_id, event=event.type)
                    self.connection.condition = Condition(
                        "amqp:internal-error", "Internal error (see the broker log)")
                    self.connection.close()
                self.collector.pop()
        finally:
            self._in_engine = False
        self._flush()

    def _flush(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        transport = self.transport
        while True:
            pending = transport.pending()
            if pending <= 0:
                break
            data = transport.peek(pending)
            transport.pop(len(data))
            if not self.closing:
                self.link.write(bytes(data))
        if pending < 0 or transport.closed:
            self._close_socket()
            return
        self._schedule_tick()

    def _schedule_flush(self) -> None:
        if self._flush_call is None and not self._in_engine:
            self._flush_call = self.clock.callLater(0, self._pump)

    def _schedule_tick(self) -> None:
        if self.closing:
            return
        deadline = self.transport.tick(self.clock.seconds())
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        self._tick_call = None
        if deadline:
            self._tick_call = self.clock.callLater(max(deadline - self.clock.seconds(), 0.01),
                                                   self._pump)

    # == connection and sessions =============================================================
    def on_connection_remote_open(self, event) -> None:
        if self.refusal is not None:
            self.connection.open()
            self.connection.condition = Condition("amqp:resource-limit-exceeded", self.refusal)
            self.connection.close()
            return
        container = self.connection.remote_container
        try:
            self.broker.connect(self, container or None)
            self.client_id = container or None
            self.registered = True
        except BrokerError as e:
            self.connection.open()
            self.connection.condition = Condition("amqp:invalid-field", str(e))
            self.connection.close()
            return
        self.connection.container = self.broker.name
        self.connection.open()

    def on_connection_remote_close(self, event) -> None:
        self.connection.close()

    def on_session_remote_open(self, event) -> None:
        event.session.open()

    def on_session_remote_close(self, event) -> None:
        event.session.close()

    def on_transport_error(self, event) -> None:
        condition = self.transport.condition
        log.info("AMQP {connection} from {peer}: {error}", connection=self.connection_id,
                 peer=self.peer, error=condition.description if condition else "transport error")

    # == links ===============================================================================
    def on_link_remote_open(self, event) -> None:
        link = event.link
        try:
            if link.is_sender:
                self._attach_consumer(link)
            else:
                self._attach_producer(link)
        except (BrokerError, DestinationError, SecurityError, SelectorError) as e:
            # refused: attach with no terminus, then detach with the reason (AMQP's way)
            if link.is_sender:
                link.source.address = None
            else:
                link.target.address = None
            link.open()
            link.condition = _condition_for(e)
            link.close()

    def _authorize(self, operation: str, dest) -> None:
        self.broker.authorize(self.principal, operation, [dest])

    def _attach_producer(self, link) -> None:
        target = link.remote_target
        if target.type == Terminus.COORDINATOR:
            link.target.type = Terminus.COORDINATOR
            link.target.copy(target)
            self.coordinators.add(link)
            link.open()
            link.flow(CREDIT)
            return
        dest = None
        if target.dynamic:
            dest = self.broker.create_temporary(TEMP_QUEUE, self.connection_id, self)
            link.target.address = mapping.render_address(dest)
            link.target.dynamic = True
        elif target.address:
            dest = mapping.parse_address(target.address)
            self._authorize("write", dest)
            link.target.address = target.address
        link.target.durability = target.durability
        link.rcv_settle_mode = Link.RCV_FIRST
        if self.max_message_size:
            link.max_message_size = self.max_message_size  # proton refuses bigger transfers
        self.producers[link] = dest
        link.open()
        link.flow(CREDIT)

    def _attach_consumer(self, link) -> None:
        source = link.remote_source
        link.snd_settle_mode = link.remote_snd_settle_mode
        if source.dynamic:
            dest = self.broker.create_temporary(TEMP_QUEUE, self.connection_id, self)
            link.source.address = mapping.render_address(dest)
            link.source.dynamic = True
        elif not source.address:
            self._attach_existing_durable(link)
            return
        else:
            dest = mapping.parse_address(source.address)
            link.source.address = source.address
        self._authorize("read", dest)
        selector_text = self._selector(source)
        selector = compile_selector(selector_text) if selector_text else None
        if dest.is_queue and source.distribution_mode == Terminus.DIST_MODE_COPY:
            self._attach_browser(link, dest, selector)
            return
        durable = dest.is_topic and not dest.is_temporary and \
            source.durability != Terminus.NONDURABLE
        if durable and not self.client_id:
            raise BrokerError("A durable subscription needs a container id")
        settled = link.remote_snd_settle_mode == Link.SND_SETTLED
        consumer = AmqpConsumer(link, self, link.name, [dest],
                                ack_mode=AUTO if settled else CLIENT_INDIVIDUAL,
                                selector=selector, selector_text=selector_text,
                                prefetch=1 << 30, durable_name=link.name if durable else None,
                                client_id=self.client_id)
        link.source.durability = source.durability
        link.source.expiry_policy = source.expiry_policy
        if selector_text:
            link.source.filter.put_dict({symbol(SELECTOR_FILTERS[0]): Described(
                symbol(SELECTOR_FILTERS[0]), selector_text)})
        self.broker.subscribe(consumer)
        self.consumers[link] = consumer
        link.open()

    def _attach_browser(self, link, dest, selector) -> None:
        """A `copy` source on a queue is a browser (qpid-jms's QueueBrowser): the queue's
        messages as they are now, sent settled as credit allows, nothing consumed."""
        link.source.distribution_mode = Terminus.DIST_MODE_COPY
        link.snd_settle_mode = Link.SND_SETTLED
        self.browsers[link] = None  # filled once the queue has been read
        link.open()

        def read(messages):
            if link in self.browsers:
                self.browsers[link] = list(reversed(messages))
                self._browse_more(link)
                self._schedule_flush()
        self.broker.browse([dest], selector).addCallbacks(
            read, lambda f: log.failure("AMQP browse of {dest}", f, dest=dest))

    def _browse_more(self, link) -> None:
        pending = self.browsers.get(link)
        if pending is None:
            return
        while pending and link.credit > 0 and self.writable:
            delivery = link.delivery(self.next_ack_id())
            link.stream(mapping.to_amqp(pending.pop()).encode())
            link.advance()
            delivery.settle()
        if not pending and link.drain_mode and link.credit > 0:
            link.drained()  # all of it was sent: the browser knows it has seen the end

    def _attach_existing_durable(self, link) -> None:
        """A receiver with no source: the client looks for its durable subscription by link
        name (to unsubscribe it, as qpid-jms does): answer with it, or with no source."""
        sub = self.broker.durable.get((self.client_id, link.name))
        if sub is not None:
            link.source.address = mapping.render_address(sub.topics[0])
            link.source.durability = Terminus.DELIVERIES
            link.source.expiry_policy = Terminus.EXPIRE_NEVER
        self.consumers[link] = None  # nothing flows; closing it removes the subscription
        link.open()

    @staticmethod
    def _selector(source) -> str:
        try:
            filters = source.filter.get_object() if source.filter else None
        except Exception:
            filters = None
        if not filters:
            return ""
        for key, value in dict(filters).items():
            descriptor = getattr(value, "descriptor", None)
            if str(key) in SELECTOR_FILTERS[:1] or descriptor in SELECTOR_FILTERS or \
                    str(descriptor) in SELECTOR_FILTERS[:1]:
                return str(getattr(value, "value", value))
        return ""

    def on_link_remote_close(self, event) -> None:
        self._detach(event.link, closed=True)

    def on_link_remote_detach(self, event) -> None:
        self._detach(event.link, closed=False)

    def _detach(self, link, closed: bool) -> None:
        if link in self.consumers:
            consumer = self.consumers.pop(link)
            if consumer is not None:
                self.broker.unsubscribe(consumer)
            if closed and (consumer is None or consumer.durable_name is not None):
                try:
                    self.broker.remove_durable(self.client_id, link.name)
                except BrokerError:
                    pass  # none, or in use elsewhere: nothing to remove here
        self.producers.pop(link, None)
        self.held.pop(link, None)
        self.browsers.pop(link, None)
        self.coordinators.discard(link)
        if closed:
            link.close()
        else:
            link.detach()

    def on_link_flow(self, event) -> None:
        link = event.link
        if link in self.browsers:
            self._browse_more(link)
            return
        consumer = self.consumers.get(link)
        if consumer is not None:
            for source in list(consumer.sources):
                source.wake()
            if link.drain_mode and link.credit > 0:
                link.drained()  # nothing more to send now: give the credit back

    # == deliveries ==========================================================================
    def on_delivery(self, event) -> None:
        delivery = event.delivery
        link = delivery.link
        if link.is_sender:
            self._outcome(link, delivery)
        elif self.max_message_size and delivery.pending > self.max_message_size:
            # proton would buffer it all: the link goes, with the limit named (spec 2.8.15)
            log.info("AMQP {connection}: a message over {limit} bytes; closing its link",
                     connection=self.connection_id, limit=self.max_message_size)
            delivery.settle()
            self.producers.pop(link, None)
            self.held.pop(link, None)
            link.condition = Condition(
                "amqp:link:message-size-exceeded",
                "Message larger than %d bytes (--max-body-length)" % self.max_message_size)
            link.close()
        elif delivery.readable and not delivery.partial:
            data = link.recv(delivery.pending)
            link.advance()
            if link in self.coordinators:
                self._transaction_control(delivery, data)
            else:
                self._incoming(link, delivery, data)

    # -- messages from the client --------------------------------------------------------------
    def _incoming(self, link, delivery, data) -> None:
        held = self.held.get(link)
        if held is not None:
            held.append((delivery, data))
            return
        self._produce(link, delivery, data)

    def _produce(self, link, delivery, data) -> None:
        try:
            amqp = AmqpMessage()
            amqp.decode(data)
            dest = self.producers.get(link)
            if dest is None:
                dest = mapping.parse_address(amqp.address)
                self._authorize("write", dest)
            message = mapping.to_broker(
                amqp, "%s:1:1:%d" % (self.connection_id, next(self._message_seq)), dest,
                self._reply_to)
            if has_scheduling_headers(message.properties):
                parse_schedule(message.properties)
            txn = self._transaction_of(delivery)
            usage = self.broker.flow_blocker([message])
            if usage is not None:
                self._block(link, delivery, data, usage, dest)
                return
            if txn is not None:
                txn.sends.append(message)
                self._settle(delivery, self._transactional(txn, ACCEPTED_CODE))
            else:
                d = self.broker.publish([message], durable=not delivery.settled)
                if delivery.settled:
                    delivery.settle()  # the client settled it first: proton may forget it now
                    d.addErrback(lambda f: log.warn("AMQP pre-settled send lost: {error}",
                                                    error=f.getErrorMessage()))
                else:
                    d.addCallbacks(lambda _: self._settle(delivery, Delivery.ACCEPTED),
                                   lambda f: self._reject(delivery, f))
        except Exception as e:
            self._reject(delivery, Failure(e))
        self._replenish(link)

    def _block(self, link, delivery, data, usage, dest) -> None:
        """A limit is full: no more credit for this link, and what it sends waits, in order."""
        self.held[link] = [(delivery, data)]
        d = self.broker.flow.wait(usage, mapping.render_address(dest), self.connection_id)
        self.flow_waits[link] = d
        d.addBoth(self._unblock, link)

    def _unblock(self, result, link) -> None:
        self.flow_waits.pop(link, None)
        held = self.held.pop(link, None)
        if held is None or self.closing:
            return
        first = True
        for i, (delivery, data) in enumerate(held):
            if isinstance(result, Failure) and first:
                self._reject(delivery, result)
                first = False
                continue
            if link in self.held:  # blocked again: the rest wait behind
                self.held[link].extend(held[i:])
                break
            self._produce(link, delivery, data)
        if link not in self.held:
            self._replenish(link)  # the refused ones used credit too
        self._schedule_flush()

    def _replenish(self, link) -> None:
        if link not in self.held and link.credit < CREDIT // 2:
            link.flow(CREDIT - link.credit)

    def _reply_to(self, address):
        try:
            return mapping.parse_address(address)
        except DestinationError:
            return address

    def _settle(self, delivery, state) -> None:
        if isinstance(state, tuple):  # a custom disposition: (code, data)
            delivery.local.data = state[1]
            delivery.update(state[0])
        else:
            delivery.update(state)
        delivery.settle()
        self._schedule_flush()

    def _reject(self, delivery, failure) -> None:
        if failure.check(BrokerError, SecurityError, DestinationError, SelectorError,
                         ScheduleError, ResourceLimitError, StoreWriteError) is None:
            log.failure("AMQP {connection}: a message from the client", failure,
                        connection=self.connection_id)
        if delivery.settled:
            return
        delivery.local.condition = _condition_for(failure.value)
        self._settle(delivery, Delivery.REJECTED)

    # -- transactions (the coordinator link) ---------------------------------------------------
    def _transaction_of(self, delivery):
        if delivery.remote_state == TRANSACTIONAL_STATE:
            data = delivery.remote.data
            txn_id = bytes(data[0]) if data else None
            txn = self.transactions.get(txn_id)
            if txn is None:
                raise BrokerError("Unknown transaction %r" % (txn_id,))
            return txn
        return None

    @staticmethod
    def _transactional(txn, outcome_code):
        return (TRANSACTIONAL_STATE, [txn.tx_id, Described(ulong(outcome_code), [])])

    def _transaction_control(self, delivery, data) -> None:
        amqp = AmqpMessage()
        amqp.decode(data)
        body = amqp.body
        name = str(getattr(body, "descriptor", ""))
        try:
            if name in ("amqp:declare:list", "49"):
                txn_id = ("txn:%s:%d" % (self.connection_id, next(self._txn_seq))).encode()
                self.transactions[txn_id] = Transaction(txn_id)
                self._settle(delivery, (DECLARED, [txn_id]))
            elif name in ("amqp:discharge:list", "50"):
                fields = list(body.value or [])
                txn_id = bytes(fields[0]) if fields else b""
                failed = bool(fields[1]) if len(fields) > 1 else False
                txn = self.transactions.pop(txn_id, None)
                if txn is None:
                    delivery.local.condition = Condition("amqp:transaction:unknown-id",
                                                         "Unknown transaction %r" % txn_id)
                    self._settle(delivery, Delivery.REJECTED)
                elif failed:
                    self._roll_back(txn)
                    self._settle(delivery, Delivery.ACCEPTED)
                else:
                    d = self.broker.commit(txn)
                    d.addCallbacks(lambda _: self._settle(delivery, Delivery.ACCEPTED),
                                   lambda f: self._commit_failed(delivery, f))
            else:
                raise BrokerError("Unknown transaction control %r" % name)
        except Exception as e:
            self._reject(delivery, Failure(e))
        self._replenish(delivery.link)

    def _roll_back(self, txn) -> None:
        """The client settled those deliveries inside the transaction: it cannot take them
        back, so the messages go back to their queues and come again, redelivered."""
        acked = [(consumer, ack_id) for consumer, ack_id, _ in txn.acks
                 if (d := consumer.in_flight.get(ack_id)) is not None and d.tx is txn]
        self.broker.rollback(txn)
        for consumer, ack_id in acked:
            if not consumer.closed:
                self.broker.release(consumer, [ack_id], redelivered=True)

    def _commit_failed(self, delivery, failure) -> None:
        if failure.check(BrokerError, StoreWriteError) is None:
            log.failure("AMQP commit", failure)
        delivery.local.condition = Condition("amqp:transaction:rollback",
                                             failure.getErrorMessage())
        self._settle(delivery, Delivery.REJECTED)

    # -- messages to the client ----------------------------------------------------------------
    def next_ack_id(self) -> str:
        return str(next(self._ack_seq))

    def deliver(self, consumer, message, ack_id) -> None:
        link = consumer.link
        encoded = mapping.to_amqp(message).encode()
        delivery = link.delivery(ack_id)
        link.stream(encoded)
        link.advance()
        if consumer.ack_mode == AUTO:
            delivery.settle()
        else:
            delivery.ack_id = ack_id
        self._schedule_flush()

    def _outcome(self, link, delivery) -> None:
        consumer = self.consumers.get(link)
        ack_id = getattr(delivery, "ack_id", None)
        if consumer is None or ack_id is None:
            return
        state = delivery.remote_state
        try:
            if state == TRANSACTIONAL_STATE:
                data = delivery.remote.data or []
                txn = self.transactions.get(bytes(data[0])) if data else None
                outcome = getattr(data[1], "descriptor", None) if len(data) > 1 else None
                if txn is None or outcome is None:
                    return  # not final yet
                kind = "ack" if int(outcome) == ACCEPTED_CODE else "nack"
                if consumer.resolve(ack_id=ack_id) is not None:
                    self.broker.tx_ack(txn, consumer, [ack_id], kind)
                delivery.ack_id = None
                delivery.settle()
                return
            if consumer.resolve(ack_id=ack_id) is None:
                delivery.settle()
                return
            if state == Delivery.ACCEPTED or (delivery.settled and not state):
                self.broker.ack(consumer, [ack_id], durable=False)
            elif state == Delivery.REJECTED:
                self.broker.nack(consumer, [ack_id])
            elif state == Delivery.RELEASED:
                self.broker.release(consumer, [ack_id], redelivered=False)
            elif state == Delivery.MODIFIED:
                self.broker.release(consumer, [ack_id],
                                    redelivered=bool(delivery.remote.failed))
            else:
                return  # not a terminal state
        except BrokerError as e:
            log.info("AMQP {connection}: {error}", connection=self.connection_id, error=e)
        delivery.ack_id = None
        delivery.settle()
        self._schedule_flush()

    # == flow control of the socket and teardown ===============================================
    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        for consumer in list(self.consumers.values()):
            if consumer is not None:
                for source in list(consumer.sources):
                    source.wake()
        self._schedule_flush()

    def _close_socket(self) -> None:
        if not self.closing:
            self.closing = True
            self.writable = False
            self.link.close()

    def connection_lost(self) -> None:
        self.closing = True
        self.writable = False
        for call in (self._flush_call, self._tick_call):
            if call is not None and call.active():
                call.cancel()
        for wait in list(self.flow_waits.values()):
            wait.cancel()  # gone: it waits for nothing
        for txn in self.transactions.values():
            self.broker.rollback(txn)
        self.transactions.clear()
        consumers, self.consumers = self.consumers, {}
        for consumer in consumers.values():
            if consumer is not None:
                self.broker.unsubscribe(consumer)
        if self.registered:
            self.broker.disconnect(self, self.client_id)
            self.registered = False
