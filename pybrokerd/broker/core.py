"""The broker core: destinations, subscriptions, acks, transactions, dead letters, expiry.

Protocol sessions call in here; nothing here knows a protocol.  Every method that changes
durable state returns a Deferred that fires once the store says the change is durable, so a
session can hold back its receipt until then.  In-memory effects happen at once (a message is
dispatched while its store write is still in flight, as ActiveMQ does); the store's group
commit makes an add and its remove in one batch cancel out.
"""

from __future__ import annotations

import collections
import itertools

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from pybrokerd.broker.destination import (
    QUEUE, TEMP_QUEUE, TEMP_TOPIC, TOPIC, VIRTUAL_TOPIC_PREFIX, Destination, compile_pattern,
    has_wildcard,
    virtual_topic_of)
from pybrokerd.broker.message import Message, now_ms
from pybrokerd.broker.queue import (
    AUTO, Consumer, MessageQueue, TopicSubscription)
from pybrokerd.broker.usage import FlowControl
from pybrokerd.security import Security, SecurityError
from stores.batching import StoreWriteError, describe_error
from scheduler.scheduler import is_management, is_scheduled

log = Logger()

DLQ_NAME = "ActiveMQ.DLQ"

# Duplicate suppression across failover (docs/stomp.md): a client stamps each send with its
# producer id and a sequence number that grows by one per send; the broker remembers the
# highest sequence per producer, durably with the message, and drops a re-sent duplicate
# while still answering its receipt.
PRODUCER_ID = "pybrokerd-producer"
PRODUCER_SEQ = "pybrokerd-seq"
MAX_PRODUCERS = 100_000  # producer ids remembered (least recently used forgotten first)


def _removal_failed(failure) -> None:
    log.failure("removing consumed message", failure)


class BrokerError(Exception):
    """A request the broker refuses; str(e) is the message the client sees."""


class NotAuthorized(BrokerError):
    """Authorization refused it (protocols that have a word for that use it)."""


class Transaction:
    """Sends and acks of one client transaction, applied together at commit."""

    def __init__(self, tx_id: str):
        self.tx_id = tx_id
        self.sends: list[Message] = []
        self.acks: list[tuple[Consumer, str, str]] = []  # (consumer, ack id, "ack" | "nack")


class Broker:
    def __init__(self, store, *, clock=None, prioritized: bool = False,
                 max_redeliveries: int | None = None, expiry_check_interval: float = 30.0,
                 dlq_name: str = DLQ_NAME, name: str = "localhost", page_size: int = 1000,
                 redelivery_delay: int = 0, redelivery_backoff: float = 1.0):
        if clock is None:
            from twisted.internet import reactor as clock
        self.store = store
        self.clock = clock
        self.name = name
        self.prioritized = prioritized
        self.page_size = max(page_size, 1)
        # broker-side redelivery (ActiveMQ's RedeliveryPlugin): a NACKed queue message comes
        # back after a delay instead of going straight to the DLQ
        self.redelivery_delay = redelivery_delay
        self.redelivery_backoff = redelivery_backoff
        self.max_redeliveries = max_redeliveries
        self.dlq = Destination(QUEUE, dlq_name)
        self.queues: dict[Destination, MessageQueue] = {}
        # virtual topics (ActiveMQ's default virtualDestinationInterceptor): topic name ->
        # the queues "Consumer.<name>.<topic>" made so far, each of which gets a copy of what
        # is sent to the topic "VirtualTopic.>"; a deleted queue drops out when next used
        self.virtual_queues: dict[str, dict[Destination, None]] = {}
        self.topic_subscriptions: set[TopicSubscription] = set()
        # memory, store and scheduler limits (the service sets them from the options)
        self.flow = FlowControl(clock)
        stored = getattr(store, "stored_bytes", None)
        if stored is not None:
            self.flow.store.measure = stored
        self.durable: dict[tuple[str, str], TopicSubscription] = {}
        self.temp_owners: dict[Destination, object] = {}
        self.wildcard_consumers: list[tuple[Consumer, str, object]] = []
        self.client_ids: dict[str, object] = {}
        self.connections: set = set()
        self._seq = itertools.count(1)
        self._temp_seq = itertools.count(1)
        self._expiry_interval = expiry_check_interval
        self._expiry_loop = None
        self.scheduler = None  # set by the service: delayed and cron messages
        self.security = Security()  # set by the service from the config: allows everything
        # a non-durable topic subscriber holds at most this many undelivered messages
        self.topic_pending_limit = 10000
        from pybrokerd.broker.management import Management  # (it imports this module)
        self.management = Management(self)  # statistics and purge destinations
        # producer id -> highest sequence seen, least recently used first
        self.producers: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._producer_writes: dict[str, tuple] = {}  # producer -> (its latest write, duplicates waiting on it)
        self.duplicates_dropped = 0
        self.max_producers = MAX_PRODUCERS

    # -- life cycle ----------------------------------------------------------------------
    @defer.inlineCallbacks
    def start(self):
        """Rebuild queues and durable subscriptions from the (already opened) store."""
        recorded = getattr(self.store, "producers", dict)()
        for producer_id, (sequence, _) in sorted(recorded.items(), key=lambda kv: kv[1][1]):
            self.producers[producer_id] = sequence
        for name in self.store.destinations():
            queue = self.queue(Destination(QUEUE, name))
            yield self._recover_into(queue)
        for info in self.store.subscriptions():
            sub = self._make_durable(info["client_id"], info["name"],
                                     [Destination(*d) for d in info["destinations"]],
                                     info.get("selector") or "", persist=False)
            yield self._recover_into(sub)
        if self._expiry_interval:
            self._expiry_loop = task.LoopingCall(self.expire_now)
            self._expiry_loop.clock = self.clock
            self._expiry_loop.start(self._expiry_interval, now=False)

    def _recover_into(self, queue: MessageQueue):
        """Messages come back a window at a time as consumers drain (see MessageQueue)."""
        queue.load_window()
        return defer.succeed(None)

    def stop(self):
        self.flow.stop()
        if self._expiry_loop is not None and self._expiry_loop.running:
            self._expiry_loop.stop()

    # -- connections ---------------------------------------------------------------------
    def authenticate(self, login, passcode) -> defer.Deferred:
        """-> Deferred Principal, or a SecurityError failure (hashing runs in a thread)."""
        return threads.deferToThread(self.security.authenticate, login, passcode)

    def connect(self, session, client_id: str | None) -> None:
        if client_id is not None:
            if client_id in self.client_ids:
                other = self.client_ids[client_id]
                raise BrokerError("Broker: %s - Client: %s already connected from %s"
                                  % (self.name, client_id, getattr(other, "peer", "another connection")))
            self.client_ids[client_id] = session
        self.connections.add(session)

    def disconnect(self, session, client_id: str | None) -> None:
        if client_id is not None and self.client_ids.get(client_id) is session:
            del self.client_ids[client_id]
        self.connections.discard(session)
        for dest, owner in list(self.temp_owners.items()):
            if owner is session:
                self.delete_temporary(dest)

    def authorize(self, principal, operation: str, destinations) -> None:
        """Raise BrokerError (ActiveMQ's text) unless the principal may do `operation`
        ("read" or "write") on every destination; creating a queue that does not exist yet
        and the management destinations need "admin" as well."""
        security = self.security
        if security.entries is None:
            return
        for dest in destinations:
            kind = "queue" if dest.is_queue else "topic"
            checks = [operation]
            if _is_admin_destination(dest):
                checks.append("admin")
            elif dest.is_queue and not dest.is_temporary and not dest.is_wildcard \
                    and dest not in self.queues:
                checks.append("admin")  # it would be created
            try:
                for op in checks:
                    security.check(principal, op, kind, dest.name, dest.is_temporary)
            except SecurityError as e:
                raise NotAuthorized(str(e)) from None

    # -- destinations --------------------------------------------------------------------
    def queue(self, destination: Destination) -> MessageQueue:
        queue = self.queues.get(destination)
        if queue is None:
            store = None
            if destination.kind == QUEUE:
                store = self.store.queue_store(destination.name)
            queue = MessageQueue(self, destination, store=store, prioritized=self.prioritized)
            queue.window = self.page_size
            self.queues[destination] = queue
            if destination.kind == QUEUE:
                topic = virtual_topic_of(destination.name)
                if topic is not None:
                    self.virtual_queues.setdefault(topic, {})[destination] = None
            for consumer, kind, match in self.wildcard_consumers:
                if kind == destination.kind and match(destination.name):
                    queue.add_consumer(consumer)
        return queue

    @defer.inlineCallbacks
    def delete_queue(self, dest: Destination):
        """Remove a queue and its messages (the admin API; ActiveMQ's removeQueue).  A queue
        with consumers is refused: deleting it under them would only make it again."""
        queue = self.queues.get(dest)
        if queue is None:
            raise BrokerError("no such queue: %s" % dest.stomp())
        if queue.consumers:
            raise BrokerError("%s has %d consumer(s): close them first"
                              % (dest.stomp(), len(queue.consumers)))
        count = yield self.management.purge_queue(queue)
        if self.queues.get(dest) is queue and not queue.consumers:
            del self.queues[dest]
            queue.discard()
            if queue.store is not None:
                yield self.store.remove_destination(dest.name)
        return count

    def create_temporary(self, kind: str, connection_id: str, owner,
                         name: str | None = None) -> Destination:
        """A temporary destination owned by `owner` (deleted when it disconnects); named by
        the broker, or by the client (OpenWire clients name their own)."""
        dest = Destination(kind, name or "%s:%d" % (connection_id, next(self._temp_seq)))
        self.temp_owners[dest] = owner
        if kind == TEMP_QUEUE:
            self.queue(dest)
        return dest

    def delete_temporary(self, dest: Destination) -> None:
        self.temp_owners.pop(dest, None)
        queue = self.queues.pop(dest, None)
        if queue is not None:
            for consumer in list(queue.consumers):
                queue.remove_consumer(consumer)
            queue.discard()
        for sub in list(self.topic_subscriptions):
            if sub.durable_key is None and all(kind == TEMP_TOPIC for kind, _ in sub.patterns) \
                    and sub.destination == dest:
                self.topic_subscriptions.discard(sub)
                sub.discard()

    def _check_usable(self, dest: Destination) -> None:
        if dest.is_temporary and dest not in self.temp_owners:
            raise BrokerError("Cannot use a deleted temporary destination: %s" % dest.stomp())

    # -- producing -----------------------------------------------------------------------
    def send(self, message: Message) -> defer.Deferred:
        """Route a message now; the Deferred fires when it is durable."""
        scheduled = self._to_scheduler(message)
        if scheduled is not None:
            return scheduled
        ops: list = []
        self._route(message, ops)
        return self._persist(ops)

    def flow_blocker(self, messages: list[Message]):
        """The full resource (a Usage) a client's send has to wait for, or None."""
        first = messages[0]
        scheduled = self.scheduler is not None and is_scheduled(first)
        for message in messages:
            usage = self.flow.blocker(message, scheduled)
            if usage is not None:
                # only now, with a limit full, is it worth asking: requests to manage the
                # broker always get through
                return None if _is_admin_destination(first.destination) else usage
        return None

    def can_gather(self, messages: list[Message]) -> bool:
        """Would publish() take these copies of one send the plain way (no management
        request, no scheduling, no producer sequence), so that publish(into=...) gathers
        them for one finish_sends() with others?"""
        scheduler = self.scheduler
        for message in messages:
            if (PRODUCER_ID in message.properties
                    or self.management.handles(message.destination)
                    or (scheduler is not None and (is_management(message.destination)
                                                   or is_scheduled(message)))):
                return False
        return True

    def finish_sends(self, ops: list) -> defer.Deferred:
        """Store the sends gathered by publish(into=...) as one write (nobody waits on a sync
        for them), then enqueue them, in order. -> Deferred firing when it is written."""
        return self._persist(ops, durable=False)

    def publish(self, messages: list[Message], durable: bool = True,
                producer: tuple | None = None, into: list | None = None) -> defer.Deferred | None:
        """A client's send: the copies of one message (several for a composite destination),
        routed as one atomic batch, unless it is a duplicate re-sent after a failover.
        durable=False: nobody waits for a receipt, so the store need not sync for it (as
        ActiveMQ's KahaDB does for a send that wants no response).
        `producer` = (producer id, sequence) of a protocol that numbers its sends itself
        (OpenWire); else our failover client's headers say it.  `into`: a plain send (see
        can_gather, and only such a send) is routed now but its operations go there, for
        finish_sends() (-> None)."""
        if into is not None:
            # a plain send (can_gather said so): no producer sequence, nothing for the
            # scheduler or management, so only what _to_scheduler does for any message
            self._check_stores(messages)
            ops: list = []
            for message in messages:
                if message.destination.is_topic:
                    self.management.published(message)
                self._route(message, ops)
            into.extend(ops)  # (only once every copy is routed: all of them or none)
            return None
        first = messages[0]
        stamp = None  # (producer id, sequence, the sequence it had before)
        if producer is None and PRODUCER_ID in first.properties:
            producer = (first.properties[PRODUCER_ID], first.properties.get(PRODUCER_SEQ))
        if producer is not None:
            stamp = self._producer_sequence(*producer)
            if stamp is None:
                return self._duplicate_done(producer[0])
        scheduled = []
        ops: list = []
        try:
            self._check_stores(messages)
            for message in messages:
                job = self._to_scheduler(message)
                if job is not None:
                    scheduled.append(job)
                else:
                    self._route(message, ops)
        except Exception:
            if stamp is not None:  # refused: a re-send of it must not count as a duplicate
                producer_id, _, previous = stamp
                if previous is None:
                    self.producers.pop(producer_id, None)
                else:
                    self.producers[producer_id] = previous
            raise
        if stamp is None and not scheduled:
            return self._persist(ops, durable)  # the common case: a plain send
        if stamp is not None and first.persistent and not scheduled:
            ops.append(("producer", None, stamp[:2]))  # atomic with the message's add
        done = scheduled + [self._persist(ops, durable)]
        if stamp is not None and first.persistent and scheduled:
            # the job went to the scheduler's own store: the producer's sequence is written
            # only once the job is durable there, or a crash in between would leave a
            # sequence whose send is lost, and the client's re-send dropped as a duplicate
            # (the other order risks only a duplicate, which the client's audit drops)
            after = scheduled[0] if len(scheduled) == 1 else defer.gatherResults(
                scheduled, consumeErrors=True)
            after.addCallback(lambda _: self.store.transaction([("producer", None, stamp[:2])],
                                                              durable=durable))
            done = [after, done[-1]]
        d = done[0] if len(done) == 1 else defer.gatherResults(done, consumeErrors=True)
        if stamp is not None:
            self._track_write(stamp[0], d)
            d.addErrback(self._unstamp, stamp)
        return d

    def _unstamp(self, failure, stamp):
        """The send was not stored: a re-send of it must not be dropped as a duplicate."""
        producer_id, sequence, previous = stamp
        if self.producers.get(producer_id) == sequence:
            if previous is None:
                self.producers.pop(producer_id, None)
            else:
                self.producers[producer_id] = previous
        return failure

    def _check_stores(self, messages: list[Message]) -> None:
        """Refuse at once what a store that cannot write would have to hold."""
        if getattr(self.store, "failure", None) is not None:
            for message in messages:
                if message.persistent:
                    raise BrokerError(
                        "Persistent messages are refused: %s. The broker tries again every "
                        "second and accepts them once it can write; non-persistent messages "
                        "still flow" % _store_trouble(self.store))
        if self.scheduler is not None:
            store = self.scheduler.adapter
            if getattr(store, "failure", None) is not None:
                for message in messages:
                    if is_scheduled(message):
                        raise BrokerError("Scheduled messages are refused: %s"
                                          % _store_trouble(store))

    def _producer_sequence(self, producer_id: str, raw):
        """(producer id, sequence, previous sequence) for a stamped send, None for a duplicate."""
        try:
            sequence = int(raw)
        except (TypeError, ValueError):
            raise BrokerError("Header %s needs an integer %s header (got %r)"
                              % (PRODUCER_ID, PRODUCER_SEQ, raw)) from None
        last = self.producers.get(producer_id)
        if last is not None:
            self.producers.move_to_end(producer_id)
            if sequence <= last:
                return None
        self.producers[producer_id] = sequence
        if last is None and len(self.producers) > self.max_producers:
            oldest, _ = self.producers.popitem(last=False)
            self._producer_writes.pop(oldest, None)
            self.store.transaction([("producer", None, (oldest, None))])
        return producer_id, sequence, last

    def _duplicate_done(self, producer_id: str) -> defer.Deferred:
        """The receipt of a dropped duplicate waits for the producer's latest write, which
        holds (or follows) the original, and fails if that write failed."""
        self.duplicates_dropped += 1
        latest = self._producer_writes.get(producer_id)
        if latest is None:
            return defer.succeed(None)
        d = defer.Deferred()
        latest[1].append(d)
        return d

    def _track_write(self, producer_id: str, d: defer.Deferred) -> None:
        # the outcome is taken here, before anybody else's callbacks can change the result
        entry = (d, [])
        self._producer_writes[producer_id] = entry

        def done(result):
            if self._producer_writes.get(producer_id) is entry:
                del self._producer_writes[producer_id]
            for waiter in entry[1]:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(None)
            return result
        d.addBoth(done)

    def forget_producers(self, producer_ids) -> defer.Deferred:
        """A client closed cleanly: its producers will never re-send."""
        ops = []
        for producer_id in producer_ids:
            if self.producers.pop(producer_id, None) is not None:
                ops.append(("producer", None, (producer_id, None)))
            self._producer_writes.pop(producer_id, None)
        return self.store.transaction(ops) if ops else defer.succeed(None)

    def _to_scheduler(self, message: Message):
        """The Deferred of a management request (statistics, purge, scheduler) or of a
        scheduled message, else None: the message is to be routed."""
        managed = self.management.request(message)
        if managed is not None:
            return managed
        if self.scheduler is not None:
            if is_management(message.destination):
                return self.scheduler.manage(message)
            if is_scheduled(message):
                return self.scheduler.schedule(message)
        if message.destination.is_topic:
            self.management.published(message)  # topic statistics count it here
        return None

    def _route(self, message: Message, ops: list) -> None:
        dest = message.destination
        if message.seq == 0:
            message.seq = next(self._seq)
        if dest.kind == QUEUE and not has_wildcard(dest.name):
            # a plain queue (nearly every send): the checks below, settled by its kind
            self._enqueue(self.queue(dest), message, ops)
            return
        self._check_usable(dest)
        if dest.is_queue:
            if dest.is_wildcard:
                match = compile_pattern(dest.name)
                targets = [q for d, q in list(self.queues.items())
                           if d.kind == dest.kind and match(d.name)]
                for queue in targets:
                    self._enqueue(queue, message.copy(destination=queue.destination), ops)
                return
            self._enqueue(self.queue(dest), message, ops)
        else:
            for sub in list(self.topic_subscriptions):
                if sub.wants(message):
                    self._enqueue(sub, message, ops)
            if dest.name.startswith(VIRTUAL_TOPIC_PREFIX) and dest.kind == TOPIC:
                self._route_virtual(message, ops)

    def _route_virtual(self, message: Message, ops: list) -> None:
        """A copy to each consumer queue of a virtual topic, as from the topic (the
        MESSAGE says original-destination:/topic/VirtualTopic...)."""
        found = self.virtual_queues.get(message.destination.name)
        if not found:
            return
        for dest in list(found):
            queue = self.queues.get(dest)
            if queue is None:
                del found[dest]  # deleted since
                continue
            self._enqueue(queue, message.copy(destination=dest,
                                              original_destination=message.destination), ops)

    def _enqueue(self, queue: MessageQueue, message: Message, ops: list) -> None:
        if message.persistent and queue.store is not None:
            ops.append(("add", queue.store, message))
        # dispatched only once the add is submitted (in _persist): an auto-ack consumer
        # removes the message the moment it is dispatched, and that remove must follow its add
        ops.append(("enqueue", queue, message))

    def _persist(self, ops: list, durable: bool = True) -> defer.Deferred:
        """Submit the store operations of one broker action as one atomic batch, then do its
        in-memory enqueues.  -> Deferred firing when the batch is durable."""
        store_ops = [op for op in ops if op[0] != "enqueue"]
        if not store_ops:
            d = defer.succeed(None)
        else:
            d = self.store.transaction(store_ops, durable=durable)
            if not d.called and len(store_ops) < len(ops):  # (an ack's removes: none to undo)
                d.addErrback(self._unroute, ops)
        for op in ops:
            if op[0] == "enqueue":
                op[1].enqueue(op[2])
        return d

    def _unroute(self, failure, ops: list):
        """The store could not write the batch: its persistent messages were not stored and
        their senders hear so; those still waiting in memory are taken back, so that nobody
        receives a message whose sender was told it failed."""
        if failure.check(StoreWriteError):
            for op in ops:
                if op[0] == "enqueue" and op[2].persistent and op[1].store is not None:
                    queue, message = op[1], op[2]
                    if queue.pending.remove_where(lambda m: m is message):
                        queue.resident.discard(message.message_id)
                        queue.enqueue_count -= 1
        return failure

    # -- consuming -----------------------------------------------------------------------
    def subscribe(self, consumer: Consumer) -> None:
        """Attach a consumer to every destination it names; raises BrokerError first if any
        of them cannot be used, so nothing is half-attached."""
        queues, patterns = [], []
        for dest in consumer.destinations:
            self._check_usable(dest)
            if dest.is_queue:
                queues.append(dest)
            else:
                patterns.append((dest.kind, compile_pattern(dest.name)))
        durable_sub = None
        if patterns and consumer.durable_name is not None:
            key = (consumer.client_id, consumer.durable_name)
            durable_sub = self.durable.get(key)
            if durable_sub is not None and durable_sub.consumers:
                raise BrokerError("Durable consumer is in use for client: %s and subscriptionName: %s"
                                  % key)
        for dest in queues:
            if dest.is_wildcard:
                match = compile_pattern(dest.name)
                self.wildcard_consumers.append((consumer, dest.kind, match))
                for d, queue in list(self.queues.items()):
                    if d.kind == dest.kind and match(d.name):
                        queue.add_consumer(consumer)
            else:
                self.queue(dest).add_consumer(consumer)
        if not patterns:
            return
        topics = [d for d in consumer.destinations if d.is_topic]
        if consumer.durable_name is not None:
            key = (consumer.client_id, consumer.durable_name)
            if durable_sub is not None and (
                    durable_sub.topics != topics or durable_sub.selector_text != consumer.selector_text):
                # ActiveMQ: a durable subscriber that comes back with another topic or selector
                # gets a fresh subscription; the old backlog is discarded.
                self._delete_durable(durable_sub)
                durable_sub = None
            if durable_sub is None:
                durable_sub = self._make_durable(key[0], key[1], topics, consumer.selector_text,
                                                 selector=consumer.selector)
            durable_sub.add_consumer(consumer)
        else:
            sub = TopicSubscription(self, topics[0], patterns, consumer.selector,
                                    consumer.selector_text)
            self.topic_subscriptions.add(sub)
            sub.add_consumer(consumer)

    def _make_durable(self, client_id, name, topics, selector_text, selector=None, persist=True):
        if selector is None and selector_text:
            from pybrokerd.broker.selector import compile_selector
            selector = compile_selector(selector_text)
        patterns = [(d.kind, compile_pattern(d.name)) for d in topics]
        sub = TopicSubscription(self, topics[0], patterns, selector, selector_text,
                                store=self.store.subscription_store(client_id, name),
                                durable_key=(client_id, name))
        sub.window = self.page_size
        sub.topics = topics
        self.durable[(client_id, name)] = sub
        self.topic_subscriptions.add(sub)
        if persist:
            d = self.store.add_subscription({
                "client_id": client_id, "name": name, "selector": selector_text,
                "destinations": [tuple(t) for t in topics]})
            d.addErrback(lambda f: log.failure("storing durable subscription", f))
        return sub

    def _delete_durable(self, sub: TopicSubscription) -> defer.Deferred:
        self.durable.pop(sub.durable_key, None)
        self.topic_subscriptions.discard(sub)
        sub.discard()
        return self.store.delete_subscription(*sub.durable_key)

    def remove_durable(self, client_id: str | None, name: str) -> defer.Deferred:
        sub = self.durable.get((client_id, name))
        if sub is None:
            raise BrokerError("No durable subscription exists for clientID: %s and subscriptionName: %s"
                              % (client_id, name))
        if sub.consumers:
            # ActiveMQ's words for a removal (its TopicRegion): UNSUBSCRIBE by id first
            raise BrokerError("Durable consumer is in use")
        return self._delete_durable(sub)

    def unsubscribe(self, consumer: Consumer, delivered=None) -> defer.Deferred:
        """Detach a consumer; its unacked messages go back to the head of their queue,
        counted as redelivered, or only those for which `delivered(message)` is true (an
        OpenWire client says which ones its application saw; the rest were prefetched)."""
        consumer.closed = True
        self.wildcard_consumers = [w for w in self.wildcard_consumers if w[0] is not consumer]
        ops: list = []
        returns = []
        for source in list(consumer.sources):
            returned = source.remove_consumer(consumer)
            if isinstance(source, TopicSubscription) and source.durable_key is None:
                self.topic_subscriptions.discard(source)
                source.discard()
                continue
            if delivered is None:
                returns.append((source, self._redeliver(source, returned, ops)))
            else:
                back = []
                for message in returned:  # in their order; only the seen ones marked
                    if delivered(message):
                        back.extend(self._redeliver(source, [message], ops))
                    else:
                        back.append(message)
                returns.append((source, back))
        d = self._persist(ops)
        for source, back in returns:
            source.requeue(back)
        return d

    def _redeliver(self, source: MessageQueue, messages: list[Message], ops: list) -> list:
        """The messages to put back (redelivery count + 1); those over the limit are
        dead-lettered into `ops` instead."""
        back = []
        for message in messages:
            again = message.copy(redelivery_count=message.redelivery_count + 1)
            if self.max_redeliveries is not None and again.redelivery_count > self.max_redeliveries:
                self._dead_letter(source, again, "java.lang.Throwable: Delivery[%d] exceeds "
                                  "redelivery policy limit" % again.redelivery_count, ops)
            else:
                back.append(again)
        return back

    def consumed(self, source: MessageQueue, message: Message) -> None:
        """An auto-ack delivery: the message is gone from its queue."""
        # nobody waits for this remove: it need not be synced before anything (ActiveMQ does
        # not sync acks that want no response either); after a crash the message may come
        # back, marked redelivered
        ops: list = []
        self._consumed(source, message, ops)
        if ops:
            self.store.transaction(ops, durable=False).addErrback(_removal_failed)

    @staticmethod
    def _consumed(source: MessageQueue, message: Message, ops: list) -> None:
        """A delivery is acknowledged: counted, and its store removal added to `ops`."""
        source.dequeue_count += 1
        source.resident.discard(message.message_id)
        if message.persistent and source.store is not None:
            ops.append(("remove", source.store, message.message_id))

    def ack(self, consumer: Consumer, ack_ids: list[str], durable: bool = True,
            into: tuple | None = None) -> defer.Deferred | None:
        """durable=False: an ACK without receipt, whose remove need not be synced at once.
        into=(ops, queues): the deliveries are taken now, and their removals and queues
        added there for one finish_acks() of several ACKs (-> None)."""
        ops, sources = ([], set()) if into is None else into
        consumed = self._consumed
        for delivery in consumer.take(ack_ids):
            consumed(delivery.source, delivery.message, ops)
            sources.add(delivery.source)
        if into is not None:
            return None
        return self._persist_then_wake(ops, sources, durable)

    def finish_acks(self, gathered: tuple) -> defer.Deferred:
        """The removals and queue wake-ups of ACKs gathered with ack(into=...), none of which
        wants a receipt (so nothing waits on a sync for them)."""
        ops, sources = gathered
        return self._persist_then_wake(ops, sources, durable=False)

    def _persist_then_wake(self, ops: list, sources, durable: bool = True) -> defer.Deferred:
        # the store hears of the removals before the queues look for more to dispatch: a
        # refill from the store must not find a message that was just acked
        d = self._persist(ops, durable)
        for source in sources:
            source.wake()
        return d

    def release(self, consumer: Consumer, ack_ids: list[str],
                redelivered: bool = True) -> defer.Deferred:
        """Give deliveries back to their queues, at the head, for anyone (AMQP's released and
        modified outcomes); redelivered=True counts a delivery attempt (and may dead-letter
        one past --max-redeliveries)."""
        by_source: dict = {}
        for delivery in consumer.take(ack_ids):
            by_source.setdefault(delivery.source, []).append(delivery.message)
        ops: list = []
        returns = [(source, self._redeliver(source, messages, ops) if redelivered else messages)
                   for source, messages in by_source.items()]
        d = self._persist(ops)
        for source, back in returns:
            source.requeue(back)
        return d

    def nack(self, consumer: Consumer, ack_ids: list[str]) -> defer.Deferred:
        """ActiveMQ's poison ack: straight to the DLQ (persistent) or dropped."""
        ops: list = []
        sources = set()
        later = []
        for delivery in consumer.take(ack_ids):
            delivery.source.dequeue_count += 1
            self._poisoned(delivery.source, delivery.message, ops, later)
            sources.add(delivery.source)
        d = self._persist_then_wake(ops, sources)
        return defer.gatherResults([d] + later, consumeErrors=True) if later else d

    def _poisoned(self, source: MessageQueue, message: Message, ops: list, later: list) -> None:
        """A NACKed message: redelivered after a delay if that policy is on and the message
        came from a queue with redeliveries left, else dead-lettered."""
        limit = self.max_redeliveries if self.max_redeliveries is not None else 6
        if (self.redelivery_delay > 0 and self.scheduler is not None
                and source.destination.is_queue and message.redelivery_count < limit):
            source.resident.discard(message.message_id)
            if message.persistent and source.store is not None:
                ops.append(("remove", source.store, message.message_id))
            delay = int(self.redelivery_delay * self.redelivery_backoff ** message.redelivery_count)
            again = message.copy(redelivery_count=message.redelivery_count + 1, seq=0)
            again.properties["AMQ_SCHEDULED_DELAY"] = str(delay)
            again.properties["redeliveryDelay"] = str(delay)
            later.append(self.scheduler.schedule(again))
            return
        # a client's poison ack names no cause (ActiveMQ sets none for it either)
        self._dead_letter(source, message, None, ops)

    def _dead_letter(self, source: MessageQueue, message: Message, cause: str | None,
                     ops: list) -> None:
        source.resident.discard(message.message_id)
        if message.persistent and source.store is not None:
            ops.append(("remove", source.store, message.message_id))
        if not message.persistent:
            return  # ActiveMQ: processNonPersistent=false, dropped
        if source.destination == self.dlq:
            return  # never loop a message through its own DLQ
        dead = message.copy(destination=self.dlq,
                            original_destination=message.original_destination or message.destination,
                            expires=0, seq=0, redelivery_count=0)
        if cause is not None:
            dead.properties["dlqDeliveryFailureCause"] = cause
        dead.properties.setdefault("originalExpiration", str(message.expires))
        self._route(dead, ops)

    def expired(self, source: MessageQueue, message: Message) -> None:
        """Dispatch met an expired message: count it, dead-letter it if persistent."""
        source.expired_count += 1
        ops: list = []
        # in ActiveMQ's words (the cause is a Throwable there)
        self._dead_letter(source, message,
                          "java.lang.Throwable: Message Expired. Expiration:%d" % message.expires,
                          ops)
        self._persist(ops).addErrback(lambda f: log.failure("expiring message", f))

    def expire_now(self) -> None:
        now = now_ms()
        for queue in list(self.queues.values()) + list(self.topic_subscriptions):
            for message in queue.remove_expired(now):
                self.expired(queue, message)

    @defer.inlineCallbacks
    def browse(self, destinations: list[Destination], selector=None, limit=None):
        """-> Deferred firing with the messages of the queues, in order, without consuming;
        with a limit, the first `limit` of them (paged-out ones are not all read then)."""
        found = []
        if limit is not None and limit <= 0:
            return found
        now = now_ms()
        for dest in destinations:
            self._check_usable(dest)
            if dest.is_wildcard:
                match = compile_pattern(dest.name)
                queues = [q for d, q in self.queues.items() if d.kind == dest.kind and match(d.name)]
            else:
                queues = [self.queue(dest)]
            for queue in queues:
                # as ActiveMQ: a browse that meets expired messages expires them (to the DLQ)
                for message in queue.remove_expired(now):
                    self.expired(queue, message)
                messages = queue.messages()
                if queue.paged and (limit is None or len(found) + len(messages) < limit):
                    want = queue.paged + len(queue.resident)
                    if limit is not None and selector is None:
                        want = min(want, limit - len(found) - len(messages))
                    messages += (yield queue.store.recover(want, skip=queue.resident))
                for message in messages:
                    if message.is_expired(now):
                        continue
                    if selector is None or selector(message.selector_value):
                        found.append(message)
                        if limit is not None and len(found) >= limit:
                            return found
        return found

    # -- transactions --------------------------------------------------------------------
    def tx_ack(self, tx: Transaction, consumer: Consumer, ack_ids: list[str], kind: str) -> None:
        for ack_id in ack_ids:
            delivery = consumer.in_flight[ack_id]
            if delivery.tx is None:
                delivery.tx = tx
                consumer.tx_acked += 1
            tx.acks.append((consumer, ack_id, kind))
        for source in {consumer.in_flight[a].source for a in ack_ids}:
            source.wake()

    def commit(self, tx: Transaction) -> defer.Deferred:
        try:
            self._check_stores(tx.sends)
        except BrokerError:
            self.rollback(tx)  # its acks must not stay marked as taken by a dead transaction
            raise
        ops: list = []
        scheduled = []
        try:
            for message in tx.sends:
                d = self._to_scheduler(message)
                if d is not None:
                    scheduled.append(d)  # scheduled only now, at COMMIT, as ActiveMQ
                else:
                    self._route(message, ops)  # e.g. a deleted temporary destination
        except BrokerError:
            self.rollback(tx)  # nothing was enqueued yet; its acks are released
            raise
        sources = set()
        for consumer, ack_id, kind in tx.acks:
            delivery = consumer.in_flight.get(ack_id)
            if delivery is None or delivery.tx is not tx:
                continue  # the consumer went away and the message was returned
            consumer.take([ack_id])
            sources.add(delivery.source)
            if kind == "ack":
                self._consumed(delivery.source, delivery.message, ops)
            else:
                delivery.source.dequeue_count += 1
                self._poisoned(delivery.source, delivery.message, ops, scheduled)
        d = self._persist_then_wake(ops, sources)
        if scheduled:
            return defer.gatherResults([d] + scheduled, consumeErrors=True)
        return d

    def rollback(self, tx: Transaction) -> None:
        for consumer, ack_id, _ in tx.acks:
            delivery = consumer.in_flight.get(ack_id)
            if delivery is not None and delivery.tx is tx:
                delivery.tx = None
                consumer.tx_acked -= 1
        tx.sends.clear()
        tx.acks.clear()

    # -- stats ---------------------------------------------------------------------------
    def stats(self) -> list[dict]:
        rows = []
        for dest, queue in sorted(self.queues.items()):
            rows.append({"destination": dest.stomp(), "size": queue.size(),
                         "consumers": len(queue.consumers), "enqueued": queue.enqueue_count,
                         "dequeued": queue.dequeue_count, "dispatched": queue.dispatched_count,
                         "expired": queue.expired_count})
        return rows


def _is_admin_destination(dest: Destination) -> bool:
    """Management destinations: the scheduler's, the statistics plugin's, purge."""
    name = dest.name
    return (name.startswith(("ActiveMQ.Statistics", "pybrokerd.Admin.Purge"))
            or name.lower().startswith("activemq.scheduler.management"))


def _store_trouble(store) -> str:
    return "the store in %s cannot write (%s)" % (store.directory, describe_error(store.failure))


__all__ = ["Broker", "BrokerError", "Transaction", "AUTO"]
