"""One OpenWire connection: the commands of ActiveMQ's JMS client turned into broker calls.

Bytes come in through `data_received` (codec.Decoder makes commands of them); what we send
goes out through `link.write` (the Twisted glue in protocol.py).  The shape of the
conversation (docs/openwire.md):

* both sides send a WireFormatInfo at once; ours asks for loose encoding without caching, so
  the client writes what codec.py reads; then a BrokerInfo;
* ConnectionInfo (with user and password), SessionInfo, ProducerInfo, ConsumerInfo, messages,
  MessageAck, MessagePull, TransactionInfo, DestinationInfo, RemoveInfo, ShutdownInfo...;
  a command with responseRequired gets a Response (or an ExceptionResponse naming a Java
  exception class the client turns into the right JMSException) with its commandId;
* a consumer's messages go out as MessageDispatch, up to its prefetch; acks take them off.

A persistent message's Response is sent once the store made it durable.  A message the
client re-sends after a failover (same producer id and sequence) is dropped as a duplicate
and answered as if stored.
"""

from __future__ import annotations

import itertools

from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pybrokerd.broker.core import BrokerError, NotAuthorized, Transaction
from pybrokerd.broker.destination import TEMP_QUEUE, TEMP_TOPIC, TOPIC, Destination, \
    DestinationError
from pybrokerd.broker.interfaces import IConsumerSession
from pybrokerd.broker.message import Message
from pybrokerd.broker.queue import CLIENT_INDIVIDUAL, Consumer
from pybrokerd.broker.selector import SelectorError, compile_selector
from pybrokerd.broker.usage import ResourceLimitError
from pybrokerd.protocols.openwire import codec, mapping
from pybrokerd.protocols.openwire.codec import OpenWireError
from pybrokerd.security import SecurityError
from scheduler.scheduler import ScheduleError, has_scheduling_headers
from scheduler.scheduler import parse as parse_schedule
from stores.batching import StoreWriteError

log = Logger()

MAX_INACTIVITY = 30.0        # seconds without a frame from the client before we close
INITIAL_DELAY = 10.0         # before the first check (ActiveMQ's defaults)
KEEPALIVE_EVERY = 10.0       # an idle connection gets a KeepAliveInfo this often
AUTH_FAILURE_DELAY = 0.5     # as STOMP and AMQP: slows down password guessing
ADVISORY_TEMP_QUEUE = Destination(TOPIC, "ActiveMQ.Advisory.TempQueue")
ADVISORY_TEMP_TOPIC = Destination(TOPIC, "ActiveMQ.Advisory.TempTopic")
ADVISORY_TOPICS = (ADVISORY_TEMP_QUEUE, ADVISORY_TEMP_TOPIC)

DELIVERED, POISON, STANDARD, REDELIVERED, INDIVIDUAL, UNMATCHED, EXPIRED = range(7)
BEGIN, PREPARE, COMMIT_ONE_PHASE, COMMIT_TWO_PHASE, ROLLBACK, RECOVER, FORGET, END = range(8)
ADD, REMOVE = 0, 1
SUPPRESSED_DUPLICATE = "Suppressing duplicate delivery"

JMS = "javax.jms.JMSException"
INVALID_DESTINATION = "javax.jms.InvalidDestinationException"
INVALID_SELECTOR = "javax.jms.InvalidSelectorException"
INVALID_CLIENT_ID = "javax.jms.InvalidClientIDException"
RESOURCE = "javax.jms.ResourceAllocationException"
ROLLED_BACK = "javax.jms.TransactionRolledBackException"
SECURITY = "java.lang.SecurityException"


class ClientError(Exception):
    """A command we refuse: the client gets `java_class` (a JMSException subclass) and the
    text; the connection stays usable."""

    def __init__(self, text: str, java_class: str = JMS):
        super().__init__(text)
        self.java_class = java_class


def _java_class(error) -> str:
    if isinstance(error, ClientError):
        return error.java_class
    if isinstance(error, (SecurityError, NotAuthorized)):
        return SECURITY
    if isinstance(error, ResourceLimitError):
        return RESOURCE
    if isinstance(error, DestinationError):
        return INVALID_DESTINATION
    if isinstance(error, SelectorError):
        return INVALID_SELECTOR
    return JMS


class OpenWireConsumer(Consumer):
    """A JMS consumer: room is its prefetch, widened by what the client says it has delivered
    (DELIVERED acks, as ActiveMQ's prefetch extension); prefetch 0 pulls one at a time."""

    def __init__(self, info, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.info = info
        self.wire_prefetch = info.prefetchSize
        self.extension = 0    # delivered but not yet acked: the window grows by these
        self.pulls = 0        # prefetch 0: messages asked for by MessagePull
        self.pull_timer = None
        self.session_key = (info.consumerId.connectionId, info.consumerId.sessionId)

    def has_credit(self) -> bool:
        if self.closed or not self.session.writable:
            return False
        if self.wire_prefetch <= 0:
            return self.pulls > 0
        outstanding = len(self.in_flight)
        if self.extension > outstanding:  # acked (a transaction's) since: the window closes
            self.extension = outstanding
        return outstanding - self.tx_acked - self.extension < self.wire_prefetch


@implementer(IConsumerSession)
class OpenWireConnection:
    protocol = "openwire"

    @property
    def local_message_prefix(self):
        """Ids of the messages this client sends begin with its connection id (noLocal)."""
        return None if self.info is None else "%s:" % self.info.connectionId.value

    def __init__(self, broker, link, *, clock, id_generator, peer="unknown", refusal=None,
                 max_frame_size=100 * 1024 * 1024, broker_url="tcp://127.0.0.1:61616",
                 max_subscriptions=0):
        self.broker = broker
        self.link = link
        self.clock = clock
        self.peer = peer
        self.refusal = refusal
        self.broker_url = broker_url
        self.max_subscriptions = max_subscriptions
        self.connection_id = id_generator.connection_id()
        self.broker_id = id_generator.prefix  # the same for every connection to this broker
        self.max_inactivity = MAX_INACTIVITY  # 0: the client turned the check off
        self.decoder = codec.Decoder(max_frame_size)
        self.writable = True
        self.closing = False
        self.negotiated = False
        self.stack_traces = False
        self.principal = None
        self.info = None            # the client's ConnectionInfo once accepted
        self.client_id = None
        self.registered = False
        self.authenticating = False
        self.backlog: list = []     # commands that came while the login was checked
        self.sessions: set = set()
        self.producers: dict = {}   # producer id text -> ProducerInfo
        self.consumers: dict = {}   # consumer id text -> OpenWireConsumer (None: a browser)
        self.transactions: dict = {}  # transaction id key -> Transaction
        self.temporaries: set = set()
        self.window_producers: dict = {}  # producer id text -> window size (ProducerAck)
        self.blocked = None         # (usage wait, [commands]) while a limit holds us up
        self._held = None           # dispatches kept back until a command's Response is out
        self._ack_seq = itertools.count(1)
        self._last_read = clock.seconds()
        self._last_write = clock.seconds()
        self._timer = None

    @property
    def subscriptions(self) -> dict:
        return {k: c for k, c in self.consumers.items() if c is not None}

    # == start and bytes in ====================================================================
    def start(self) -> None:
        """The connection is open: our WireFormatInfo and BrokerInfo go first."""
        self._send(codec.WireFormatInfo(version=codec.VERSION, marshalledProperties=codec.encode_map({
            "TightEncodingEnabled": False, "CacheEnabled": False, "SizePrefixDisabled": False,
            "StackTraceEnabled": False, "TcpNoDelayEnabled": True,
            "MaxInactivityDuration": int(MAX_INACTIVITY * 1000),
            "MaxInactivityDurationInitalDelay": int(INITIAL_DELAY * 1000),
            "CacheSize": codec.JavaInt(0), "MaxFrameSize": self.decoder.max_frame_size,
            "ProviderName": "pybrokerd"})))
        self._send(codec.BrokerInfo(
            brokerId=codec.BrokerId(value=self.broker_id),
            brokerURL=self.broker_url, brokerName=self.broker.name))
        self._timer = self.clock.callLater(INITIAL_DELAY, self._check_activity)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._last_read = self.clock.seconds()
        try:
            commands = self.decoder.feed(data)
        except OpenWireError as e:
            self._fatal("%s" % e)
            return
        for command in commands:
            if self.closing:
                return
            if self.authenticating or self.blocked is not None:
                self.backlog.append(command)
                continue
            self._handle(command)

    def _handle(self, command) -> None:
        if command is None:
            return
        if not self.negotiated and not isinstance(command, codec.WireFormatInfo):
            self._fatal("the first command must be a WireFormatInfo, not %s"
                        % type(command).__name__)
            return
        handler = getattr(self, "on_" + type(command).__name__, None)
        if handler is None:
            self._unsupported(command)
            return
        outer, self._held = self._held, []
        try:
            handler(command)
        except (ClientError, BrokerError, SecurityError, DestinationError, SelectorError,
                ScheduleError, ResourceLimitError) as e:
            self._refuse(command, e)
        except OpenWireError as e:
            self._fatal(str(e))
        except Exception:
            log.failure("OpenWire {connection}: handling {command}",
                        connection=self.connection_id, command=type(command).__name__)
            self._refuse(command, ClientError("Internal error in the broker (see its log)"))
        finally:
            held, self._held = self._held, outer
            for data in held:
                self._write(data)

    def _unsupported(self, command) -> None:
        name = type(command).__name__
        if getattr(command, "responseRequired", False):
            self._refuse(command, ClientError("pybrokerd does not support the OpenWire %s "
                                              "command" % name))
        else:
            self._fatal("the OpenWire %s command is not supported" % name)

    # == our side of the conversation ============================================================
    def _send(self, command) -> None:
        data = codec.encode(command, self.stack_traces)
        if self._held is not None and isinstance(command, codec.MessageDispatch):
            self._held.append(data)
        else:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self.closing:
            return
        self._last_write = self.clock.seconds()
        self.link.write(data)

    def _respond(self, command) -> None:
        if command.responseRequired:
            self._send(codec.Response(correlationId=command.commandId))

    def _refuse(self, command, error) -> None:
        text = str(error)
        log.info("OpenWire {connection} from {peer}: {command} refused: {error}",
                 connection=self.connection_id, peer=self.peer,
                 command=type(command).__name__, error=text)
        exception = codec.Throwable(_java_class(error), text)
        if getattr(command, "responseRequired", False):
            self._send(codec.ExceptionResponse(correlationId=command.commandId,
                                               exception=exception))
        else:  # nobody waits for an answer: the client's exception listener hears it
            self._send(codec.ConnectionError(exception=exception,
                                             connectionId=self.info.connectionId
                                             if self.info else None))

    def _answer(self, command, d) -> None:
        """Respond once `d` fires; refuse with its failure."""
        def ok(_):
            if not self.closing:
                self._respond(command)

        def failed(failure):
            if failure.check(BrokerError, SecurityError, DestinationError, ResourceLimitError,
                             StoreWriteError, ScheduleError, ClientError) is None:
                log.failure("OpenWire {connection}", failure, connection=self.connection_id)
            if not self.closing:
                self._refuse(command, failure.value)
        d.addCallbacks(ok, failed)

    def _fatal(self, reason: str) -> None:
        """A framing error or a command we cannot take: say why in the log and close."""
        log.info("OpenWire {connection} from {peer}: {reason}; closing",
                 connection=self.connection_id, peer=self.peer, reason=reason)
        if self.negotiated and not self.closing:
            self._send(codec.ConnectionError(
                exception=codec.Throwable("java.io.IOException", reason),
                connectionId=self.info.connectionId if self.info else None))
        self._close()

    def _close(self) -> None:
        if not self.closing:
            self.closing = True
            self.writable = False
            self.link.close()

    def _check_activity(self) -> None:
        self._timer = None
        if self.closing:
            return
        now = self.clock.seconds()
        if self.blocked is not None or self.authenticating:
            self._last_read = now  # we stopped reading it: its silence is ours
        if self.max_inactivity and now - self._last_read > self.max_inactivity:
            self._fatal("nothing received for %g s (MaxInactivityDuration)"
                        % self.max_inactivity)
            return
        # the client reads at least every max_inactivity: say something 3 times as often
        every = min(KEEPALIVE_EVERY, self.max_inactivity / 3) if self.max_inactivity \
            else KEEPALIVE_EVERY
        if now - self._last_write >= every * 0.9:
            self._send(codec.KeepAliveInfo())
        self._timer = self.clock.callLater(every, self._check_activity)

    # == negotiation and the connection ==========================================================
    def on_WireFormatInfo(self, info) -> None:
        if self.negotiated:
            return
        if info.version < 1:
            self._fatal("OpenWire version %d is not supported" % info.version)
            return
        # we asked for no tight encoding, no cache, no stack traces and a size prefix: the
        # client ANDs its wishes with ours, so that is what it speaks now, whatever it prefers
        options = codec.decode_map(info.marshalledProperties) if info.marshalledProperties \
            else {}
        theirs = options.get("MaxInactivityDuration")
        if isinstance(theirs, int) and not isinstance(theirs, bool):
            # the smaller of both, as the client computes it; 0 (or less) turns it off
            self.max_inactivity = 0 if theirs <= 0 else min(MAX_INACTIVITY, theirs / 1000.0)
        self.negotiated = True
        self.stack_traces = False  # we said false
        self.decoder.stack_traces = False

    def on_ConnectionInfo(self, info) -> None:
        if self.info is not None:
            if info.connectionId == self.info.connectionId:
                self._respond(info)  # a re-send (failover replay)
                return
            raise ClientError("This connection already has a ConnectionInfo")
        if self.refusal is not None:
            self._send(codec.ExceptionResponse(correlationId=info.commandId, exception=codec.Throwable(
                RESOURCE, self.refusal)))
            self.clock.callLater(0, self._close)
            return
        security = self.broker.security
        if security.users and (info.userName is not None or not security.anonymous):
            self.authenticating = True
            self.link.pause_reading()  # nothing more is read until the login is checked
            d = self.broker.authenticate(info.userName or "", info.password or "")
            d.addCallbacks(self._authenticated, self._login_refused,
                           callbackArgs=(info,), errbackArgs=(info,))
            return
        self._accept(info, security.authenticate_anonymous(info.userName))

    def _authenticated(self, principal, info) -> None:
        self.authenticating = False
        if self.closing:
            return
        self.link.resume_reading()
        outer, self._held = self._held, []
        try:
            self._accept(info, principal)
        except ClientError as e:
            self._refuse(info, e)
        except Exception:
            log.failure("OpenWire {connection}: accepting the connection",
                        connection=self.connection_id)
            self._refuse(info, ClientError("Internal error in the broker (see its log)"))
            self._close()
            return
        finally:
            held, self._held = self._held, outer
            for data in held:
                self._write(data)
        self._run_backlog()

    def _run_backlog(self) -> None:
        backlog, self.backlog = self.backlog, []
        for command in backlog:
            if self.closing:
                break
            if self.authenticating or self.blocked is not None:
                self.backlog.append(command)
                continue
            self._handle(command)

    def _login_refused(self, failure, info) -> None:
        self.authenticating = False
        if failure.check(SecurityError) is None:
            log.failure("authenticating OpenWire {connection}", failure,
                        connection=self.connection_id)
        log.info("OpenWire {connection} from {peer}: {reason}", connection=self.connection_id,
                 peer=self.peer, reason=failure.getErrorMessage())

        def answer():
            if not self.closing:
                self._send(codec.ExceptionResponse(correlationId=info.commandId,
                                                   exception=codec.Throwable(
                                                       SECURITY, failure.getErrorMessage())))
                self._close()
        self.clock.callLater(AUTH_FAILURE_DELAY, answer)

    def _accept(self, info, principal) -> None:
        client_id = info.clientId or None
        if client_id is not None:
            other = self.broker.client_ids.get(client_id)
            if isinstance(other, OpenWireConnection) and other.info is not None and \
                    other.info.connectionId == info.connectionId and \
                    getattr(other.principal, "user", None) == getattr(principal, "user", None):
                # the same client come back (failover to this broker again): the old socket
                # is dead even if we have not noticed yet
                other.link.abort()
                other.connection_lost()
        try:
            self.broker.connect(self, client_id)
        except BrokerError as e:
            raise ClientError(str(e), INVALID_CLIENT_ID) from None
        self.registered = True
        self.client_id = client_id
        self.principal = principal
        self.info = info
        self._respond(info)

    def _require_connection(self) -> None:
        if self.info is None:
            raise ClientError("No ConnectionInfo was sent on this connection")

    def on_SessionInfo(self, info) -> None:
        self._require_connection()
        self.sessions.add((info.sessionId.connectionId, info.sessionId.value))
        self._respond(info)

    def on_ProducerInfo(self, info) -> None:
        self._require_connection()
        key = mapping.producer_text(info.producerId)
        if info.destination is not None:
            for dest in mapping.destinations(info.destination):
                self.broker.authorize(self.principal, "write", [dest])
        self.producers[key] = info
        if info.windowSize > 0:
            self.window_producers[key] = info.windowSize
        self._respond(info)

    def on_KeepAliveInfo(self, info) -> None:
        if info.responseRequired:
            self._send(codec.KeepAliveInfo())

    def on_ShutdownInfo(self, info) -> None:
        self._respond(info)
        self._close()

    def on_FlushCommand(self, command) -> None:
        self._respond(command)

    def on_ConnectionControl(self, command) -> None:
        self._respond(command)  # a failover client saying it is fault tolerant: nothing to do

    def on_ControlCommand(self, command) -> None:
        self._respond(command)

    def on_ConsumerControl(self, control) -> None:
        consumer = self.consumers.get(mapping.consumer_text(control.consumerId)) \
            if control.consumerId is not None else None
        if consumer is not None and not control.close:
            consumer.wire_prefetch = control.prefetch
            self._wake(consumer)
        self._respond(control)

    # == destinations ============================================================================
    def on_DestinationInfo(self, info) -> None:
        self._require_connection()
        dest = mapping.destination(info.destination)
        if info.operationType == ADD:
            if dest.is_temporary:
                self.broker.authorize(self.principal, "admin", [dest])
                if dest not in self.broker.temp_owners:
                    self.broker.create_temporary(dest.kind, self.connection_id, self,
                                                 name=dest.name)
                    self.temporaries.add(dest)
                    self._advise(dest, info)
            else:
                self.broker.authorize(self.principal, "admin", [dest])
                if dest.is_queue:
                    self.broker.queue(dest)
        elif info.operationType == REMOVE:
            if dest.is_temporary:
                owner = self.broker.temp_owners.get(dest)
                if owner is not None and owner is not self:
                    raise ClientError("Cannot delete a temporary destination of another "
                                      "connection: %s" % dest.name, SECURITY)
                queue = self.broker.queues.get(dest)
                if queue is not None and queue.consumers:
                    raise ClientError("Destination still has an active subscription: %s"
                                      % dest.name)
                if dest in self.broker.temp_owners:
                    self.broker.delete_temporary(dest)
                    self._advise(dest, info)
                self.temporaries.discard(dest)
            else:
                self.broker.authorize(self.principal, "admin", [dest])
                d = self.broker.delete_queue(dest) if dest.is_queue else None
                if d is not None:
                    self._answer(info, d)
                    return
        else:
            raise ClientError("Unknown DestinationInfo operation %d" % info.operationType)
        self._respond(info)

    def _advise(self, dest: Destination, info) -> None:
        """ActiveMQ's temporary destination advisory: JMS clients learn from it which
        temporary destinations exist (and refuse to send to others)."""
        topic = ADVISORY_TEMP_QUEUE if dest.kind == TEMP_QUEUE else ADVISORY_TEMP_TOPIC
        advisory = Message("%s:0:0:%d" % (self.connection_id, next(self._ack_seq)), topic)
        advisory.jms_kind = "message"
        advisory.data_structure = codec.DestinationInfo(
            connectionId=info.connectionId, destination=info.destination,
            operationType=info.operationType)
        advisory.properties["originBrokerName"] = self.broker.name
        self.broker.send(advisory).addErrback(
            lambda f: log.failure("temporary destination advisory", f))

    def _advisory_replay(self, consumer) -> None:
        """A new advisory subscriber learns of the temporary destinations that exist."""
        for dest in list(self.broker.temp_owners):
            if dest.kind not in (TEMP_QUEUE, TEMP_TOPIC):
                continue
            topic = ADVISORY_TEMP_QUEUE if dest.kind == TEMP_QUEUE else ADVISORY_TEMP_TOPIC
            if topic not in consumer.destinations:
                continue
            message = Message("%s:0:0:%d" % (self.connection_id, next(self._ack_seq)), topic)
            message.jms_kind = "message"
            message.data_structure = codec.DestinationInfo(
                destination=mapping.destination_struct(dest), operationType=ADD)
            self._dispatch(consumer, message, None)

    def on_RemoveSubscriptionInfo(self, info) -> None:
        self._require_connection()
        client_id = info.clientId or self.client_id
        try:
            d = self.broker.remove_durable(client_id, info.subcriptionName)
        except BrokerError as e:
            if "No durable subscription" in str(e):
                raise ClientError(str(e), INVALID_DESTINATION) from None
            raise
        self._answer(info, d)

    # == consumers ===============================================================================
    def on_ConsumerInfo(self, info) -> None:
        self._require_connection()
        key = mapping.consumer_text(info.consumerId)
        if key in self.consumers:
            self._respond(info)  # a failover replay of one we have
            return
        limit = self.max_subscriptions
        if limit and sum(1 for c in self.consumers.values() if c is not None and not any(
                d in ADVISORY_TOPICS for d in c.destinations)) >= limit:
            raise ClientError("Maximum consumers per connection (%d) reached: close some "
                              "first, or raise --max-subscriptions (the JMS client's own "
                              "advisory consumer does not count)" % limit, RESOURCE)
        dests = mapping.destinations(info.destination)
        # the temporary destination advisories carry only the names of temporary
        # destinations, and every JMS client reads them at start-up: ActiveMQ makes each
        # application grant "read" on ActiveMQ.Advisory.> or fail; here any logged-in client
        # may read those two
        self.broker.authorize(self.principal, "read",
                              [d for d in dests if d not in ADVISORY_TOPICS])
        selector_text = (info.selector or "").strip()
        try:
            selector = compile_selector(selector_text) if selector_text else None
        except SelectorError as e:
            raise ClientError(str(e), INVALID_SELECTOR) from None
        if info.browser:
            self._browse(info, key, dests, selector)
            return
        durable = info.subscriptionName if all(d.is_topic for d in dests) else None
        if durable is not None and not self.client_id:
            raise ClientError("A durable subscription needs a client id", JMS)
        if durable is not None:
            if any(d.is_temporary for d in dests):
                raise ClientError("A durable subscription cannot be on a temporary topic",
                                  INVALID_DESTINATION)
        consumer = OpenWireConsumer(
            info, self, key, dests, ack_mode=CLIENT_INDIVIDUAL, selector=selector,
            selector_text=selector_text, prefetch=max(info.prefetchSize, 1),
            exclusive=info.exclusive, durable_name=durable, client_id=self.client_id,
            no_local=info.noLocal, priority=info.priority or 0)
        self.consumers[key] = consumer
        try:
            self.broker.subscribe(consumer)  # its dispatches are held until the Response
        except Exception:
            self.consumers.pop(key, None)
            raise
        self._respond(info)
        if ADVISORY_TEMP_QUEUE in dests or ADVISORY_TEMP_TOPIC in dests:
            self._advisory_replay(consumer)

    def _browse(self, info, key, dests, selector) -> None:
        """A QueueBrowser: the queue's messages as they are now, then a dispatch without a
        message (the end); nothing is consumed."""
        if not all(d.is_queue for d in dests):
            raise ClientError("Only queues can be browsed", INVALID_DESTINATION)
        self.consumers[key] = None
        self._respond(info)

        def show(messages):
            if key not in self.consumers or self.closing:
                return
            for message in messages:
                self._send(self._dispatch_command(info.consumerId, message))
            self._send(codec.MessageDispatch(consumerId=info.consumerId))
        def failed(failure):
            self._log_failure(failure, "browsing")
            if key in self.consumers and not self.closing:
                self._send(codec.MessageDispatch(consumerId=info.consumerId))  # the end
        self.broker.browse(dests, selector).addCallbacks(show, failed)

    def on_RemoveInfo(self, info) -> None:
        obj = info.objectId
        if isinstance(obj, codec.ConsumerId):
            self._remove_consumer(mapping.consumer_text(obj), info.lastDeliveredSequenceId)
        elif isinstance(obj, codec.ProducerId):
            key = mapping.producer_text(obj)
            self.producers.pop(key, None)
            self.window_producers.pop(key, None)
            self.broker.forget_producers([key]).addErrback(self._log_failure, "a producer")
        elif isinstance(obj, codec.SessionId):
            session = (obj.connectionId, obj.value)
            self.sessions.discard(session)
            for key, consumer in list(self.consumers.items()):
                if consumer is not None and consumer.session_key == session:
                    self._remove_consumer(key, info.lastDeliveredSequenceId)
            gone = []
            for key, producer in list(self.producers.items()):
                pid = producer.producerId
                if (pid.connectionId, pid.sessionId) == session:
                    self.producers.pop(key, None)
                    self.window_producers.pop(key, None)
                    gone.append(key)
            if gone:
                self.broker.forget_producers(gone).addErrback(self._log_failure, "producers")
        elif isinstance(obj, codec.ConnectionId):
            self._respond(info)
            self._forget_producers()
            self._teardown()
            return
        self._respond(info)

    def _remove_consumer(self, key: str, last_delivered: int) -> None:
        consumer = self.consumers.pop(key, None)
        if consumer is None:
            return
        if consumer.pull_timer is not None and consumer.pull_timer.active():
            consumer.pull_timer.cancel()
        delivered = None
        if last_delivered == -1:  # the client says: none of them reached the application
            delivered = lambda message: False  # noqa: E731
        elif last_delivered >= 0:
            # ActiveMQ: what the application was given (broker sequence up to the last one
            # it saw) counts as delivered; what was merely prefetched comes back unmarked
            delivered = lambda message: message.seq <= last_delivered  # noqa: E731
        self.broker.unsubscribe(consumer, delivered=delivered).addErrback(
            self._log_failure, "closing a consumer")

    # -- dispatch ------------------------------------------------------------------------------
    def next_ack_id(self) -> str:
        return str(next(self._ack_seq))

    def deliver(self, consumer, message, ack_id) -> None:
        if consumer.wire_prefetch <= 0 and consumer.pulls > 0:
            consumer.pulls -= 1
            if consumer.pull_timer is not None and consumer.pull_timer.active():
                consumer.pull_timer.cancel()
            consumer.pull_timer = None
        self._dispatch(consumer, message, ack_id)

    def _dispatch(self, consumer, message, ack_id) -> None:
        try:
            data = self._dispatch_bytes(consumer, message)
        except OpenWireError as e:
            # a message from another protocol that OpenWire cannot carry (a header over
            # 64 KiB, say): it goes to the DLQ instead of stopping the sender or the queue
            log.warn("OpenWire {connection}: message {id} cannot be sent over OpenWire ({error}); "
                     "dead-lettered", connection=self.connection_id, id=message.message_id,
                     error=e)
            if ack_id is not None:
                self.clock.callLater(0, self._undeliverable, consumer, ack_id)
            return
        if self._held is not None:
            self._held.append(data)
        else:
            self._write(data)

    def _undeliverable(self, consumer, ack_id) -> None:
        if ack_id in consumer.in_flight and not consumer.closed:
            self.broker.nack(consumer, [ack_id]).addErrback(self._log_failure, "dead-lettering")

    def _dispatch_bytes(self, consumer, message) -> bytes:
        """The MessageDispatch frame: the message and its destination are encoded once per
        message (a topic's subscribers share them), the consumer id once per consumer."""
        wire = message.wire
        if wire is None or wire[0] != "openwire":
            om = mapping.to_openwire(message)
            wire = message.wire = ("openwire", codec.encode_nested(om),
                                   codec.encode_nested(om.destination))
        consumer_bytes = consumer.wire_line
        if consumer_bytes is None:
            consumer_bytes = consumer.wire_line = codec.encode_nested(consumer.info.consumerId)
        return codec.dispatch_frame(consumer_bytes, wire[2], wire[1], message.redelivery_count)

    def _dispatch_command(self, consumer_id, message):
        """A browser's MessageDispatch (as a command)."""
        om = mapping.to_openwire(message)
        return codec.MessageDispatch(consumerId=consumer_id, destination=om.destination,
                                     message=om, redeliveryCounter=message.redelivery_count)

    def _wake(self, consumer) -> None:
        for source in list(consumer.sources):
            source.wake()

    def on_MessagePull(self, pull) -> None:
        key = mapping.consumer_text(pull.consumerId)
        consumer = self.consumers.get(key)
        if consumer is None:
            self._respond(pull)
            return
        if consumer.wire_prefetch > 0:
            self._respond(pull)
            return  # it has a prefetch: messages come anyway
        consumer.pulls = 1
        if consumer.pull_timer is not None and consumer.pull_timer.active():
            consumer.pull_timer.cancel()
        consumer.pull_timer = None
        self._wake(consumer)
        self._respond(pull)
        if consumer.pulls and pull.timeout != 0:
            if pull.timeout < 0:
                self._pull_expired(consumer)
            else:
                consumer.pull_timer = self.clock.callLater(pull.timeout / 1000.0,
                                                           self._pull_expired, consumer)

    def _pull_expired(self, consumer) -> None:
        consumer.pull_timer = None
        if consumer.pulls and not consumer.closed and not self.closing:
            consumer.pulls = 0
            self._send(codec.MessageDispatch(consumerId=consumer.info.consumerId,
                                             destination=consumer.info.destination))

    # -- acks ------------------------------------------------------------------------------
    def on_MessageAck(self, ack) -> None:
        consumer = self.consumers.get(mapping.consumer_text(ack.consumerId)) \
            if ack.consumerId is not None else None
        if consumer is None:  # a browser's, or one already gone
            self._respond(ack)
            return
        kind = ack.ackType
        if kind == DELIVERED:
            consumer.extension = min(consumer.extension + max(ack.messageCount, 1),
                                     len(consumer.in_flight))
            self._wake(consumer)
        elif kind in (STANDARD, POISON, INDIVIDUAL, EXPIRED):
            ids = self._range(consumer, ack)
            txn = self._transaction(ack.transactionId) if ack.transactionId else None
            if ids:
                if txn is not None:
                    if kind == POISON:
                        raise ClientError("A poison ack cannot be part of a transaction")
                    fresh = [a for a in ids if consumer.in_flight[a].tx is None]
                    # counted by tx_acked from now on (first: tx_ack wakes the queue)
                    self._shrink(consumer, len(fresh))
                    self.broker.tx_ack(txn, consumer, fresh, "ack")
                elif kind == POISON and not (ack.poisonCause and SUPPRESSED_DUPLICATE
                                             in (ack.poisonCause.message or "")):
                    self._shrink(consumer, len(ids))
                    self.broker.nack(consumer, ids).addErrback(self._log_failure, "poison ack")
                else:
                    self._shrink(consumer, len(ids))
                    if kind == EXPIRED:
                        for a in ids:
                            consumer.in_flight[a].source.expired_count += 1
                    d = self.broker.ack(consumer, ids, durable=ack.responseRequired)
                    if ack.responseRequired:
                        self._answer(ack, d)
                        return
                    d.addErrback(self._log_failure, "ack")
        # REDELIVERED (a local redelivery after a rollback) and UNMATCHED change nothing here
        self._respond(ack)

    def _log_failure(self, failure, what: str) -> None:
        log.failure("OpenWire {connection}: {what}", failure, connection=self.connection_id,
                    what=what)

    @staticmethod
    def _shrink(consumer, n: int) -> None:
        consumer.extension = max(consumer.extension - n, 0)

    def _range(self, consumer, ack) -> list[str]:
        """The in-flight ack ids an ack names: from its first message (or the oldest) to its
        last; one for an individual ack."""
        last = mapping.message_id_text(ack.lastMessageId) if ack.lastMessageId else None
        if last is None:
            return []
        if ack.ackType in (INDIVIDUAL, EXPIRED) or (
                ack.firstMessageId is not None and ack.firstMessageId == ack.lastMessageId):
            ack_id = consumer.by_message_id.get(last)
            return [ack_id] if ack_id is not None else []
        first = mapping.message_id_text(ack.firstMessageId) if ack.firstMessageId else None
        ids = []
        started = first is None
        for ack_id, delivery in consumer.in_flight.items():
            mid = delivery.message.message_id
            if not started and mid == first:
                started = True
            if started:
                ids.append(ack_id)
            if mid == last:
                return ids
        return ids if last in consumer.by_message_id else []

    # == producing ===============================================================================
    def _message(self, om) -> None:
        self._require_connection()
        dests = mapping.destinations(om.destination)
        for dest in dests:
            if dest.is_temporary and dest not in self.broker.temp_owners:
                raise ClientError("Cannot publish to a deleted Destination: %s"
                                  % dest.stomp(), INVALID_DESTINATION)
        txn = self._transaction(om.transactionId) if om.transactionId is not None else None
        messages = [mapping.to_broker(om, dest) for dest in dests]
        first = messages[0]
        for dest in dests:
            self.broker.authorize(self.principal, "write", [dest])
        if has_scheduling_headers(first.properties):
            parse_schedule(first.properties)
        if txn is not None:
            txn.sends.extend(messages)
            self._respond(om)
            self._producer_ack(om)
            return
        usage = self.broker.flow_blocker(messages)
        if usage is not None:
            self._block(om, usage, dests[0])
            return
        # a persistent send may come again after a failover: its producer id and sequence
        # let the broker drop the copy (a non-persistent one would not survive the failover)
        producer = (mapping.producer_text(om.producerId), om.messageId.producerSequenceId) \
            if om.persistent and om.producerId is not None and om.messageId is not None \
            and not om.messageId.textView else None
        d = self.broker.publish(messages, durable=om.responseRequired, producer=producer)
        self._producer_ack(om)
        if om.responseRequired:
            self._answer(om, d)
        else:
            d.addErrback(self._oneway_failed)

    on_ActiveMQMessage = on_ActiveMQTextMessage = on_ActiveMQBytesMessage = _message
    on_ActiveMQMapMessage = on_ActiveMQObjectMessage = on_ActiveMQStreamMessage = _message

    def _oneway_failed(self, failure) -> None:
        if failure.check(BrokerError, StoreWriteError, ScheduleError) is None:
            log.failure("OpenWire {connection}: an asynchronous send", failure,
                        connection=self.connection_id)
        if not self.closing:
            self._send(codec.ConnectionError(
                exception=codec.Throwable(_java_class(failure.value), failure.getErrorMessage()),
                connectionId=self.info.connectionId if self.info else None))

    def _producer_ack(self, om) -> None:
        """A producer with a window (jms.producerWindowSize) counts its asynchronous sends'
        sizes until we say they are in (ActiveMQ's ProducerAck)."""
        if om.responseRequired or om.producerId is None:
            return
        key = mapping.producer_text(om.producerId)
        if key in self.window_producers:
            size = 1024 + len(om.content or b"") + len(om.marshalledProperties or b"")
            self._send(codec.ProducerAck(producerId=om.producerId, size=size))

    def _block(self, om, usage, dest) -> None:
        """A limit is full: this message waits, and the client's socket is not read (its
        producer stops), until there is room or --send-fail-timeout passes."""
        d = self.broker.flow.wait(usage, dest.stomp(), self.connection_id)
        self.blocked = d
        self.link.pause_reading()
        d.addBoth(self._unblock, om)

    def _unblock(self, result, om) -> None:
        self.blocked = None
        if self.closing:
            return
        self.link.resume_reading()
        outer, self._held = self._held, []
        try:
            if isinstance(result, Failure):
                self._refuse(om, result.value)
            else:
                self._message(om)
        except Exception as e:
            self._refuse(om, e)
        finally:
            held, self._held = self._held, outer
            for data in held:
                self._write(data)
        if self.blocked is None:
            self._run_backlog()

    # == transactions ============================================================================
    @staticmethod
    def _tx_key(tx_id) -> str:
        if isinstance(tx_id, codec.LocalTransactionId):
            conn = tx_id.connectionId.value if tx_id.connectionId is not None else ""
            return "TX:%s:%d" % (conn, tx_id.value)
        raise ClientError("XA transactions are not supported by pybrokerd")

    def _transaction(self, tx_id):
        key = self._tx_key(tx_id)
        txn = self.transactions.get(key)
        if txn is None:  # ActiveMQ begins one on first use too (a failover replay)
            txn = self.transactions[key] = Transaction(key)
        return txn

    def on_TransactionInfo(self, info) -> None:
        self._require_connection()
        kind = info.type
        if kind == RECOVER:
            if info.responseRequired:
                self._send(codec.DataArrayResponse(correlationId=info.commandId, data=[]))
            return
        key = self._tx_key(info.transactionId)
        if kind == BEGIN:
            self.transactions.setdefault(key, Transaction(key))
            self._respond(info)
        elif kind == COMMIT_ONE_PHASE:
            txn = self.transactions.pop(key, None)
            if txn is None:
                raise ClientError("Unknown transaction %s: nothing to commit (it was rolled "
                                  "back)" % key, ROLLED_BACK)
            self._answer(info, self.broker.commit(txn))
        elif kind == ROLLBACK:
            txn = self.transactions.pop(key, None)
            if txn is not None:
                self.broker.rollback(txn)
                for consumer in self.consumers.values():
                    if consumer is not None:
                        self._wake(consumer)
            self._respond(info)
        else:
            raise ClientError("XA transactions are not supported by pybrokerd")

    # == teardown ================================================================================
    def _forget_producers(self) -> None:
        if self.producers:
            self.broker.forget_producers(list(self.producers)).addErrback(
                self._log_failure, "producers")
        self.producers.clear()

    def _teardown(self) -> None:
        for txn in self.transactions.values():
            self.broker.rollback(txn)
        self.transactions.clear()
        consumers, self.consumers = self.consumers, {}
        for consumer in consumers.values():
            if consumer is not None:
                consumer.closed = True  # what one gives back must not go to another of ours
        for consumer in consumers.values():
            if consumer is not None:
                if consumer.pull_timer is not None and consumer.pull_timer.active():
                    consumer.pull_timer.cancel()
                self.broker.unsubscribe(consumer).addErrback(self._log_failure, "a consumer")
        if self.registered:
            self.registered = False
            for dest in list(self.temporaries):
                if self.broker.temp_owners.get(dest) is self:
                    self._advise(dest, codec.DestinationInfo(
                        destination=mapping.destination_struct(dest), operationType=REMOVE))
            self.broker.disconnect(self, self.client_id)
        self.temporaries.clear()

    # == flow control of the socket ==============================================================
    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        for consumer in list(self.consumers.values()):
            if consumer is not None:
                self._wake(consumer)

    def connection_lost(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.closing = True
        self.writable = False
        if self.blocked is not None:
            self.blocked.cancel()
        self._teardown()
