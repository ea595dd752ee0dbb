"""Queues, topic subscriptions and consumers: who gets which message, and when.

One class, MessageQueue, holds pending messages and dispatches them to consumers with room
(prefetch credit and a writable connection).  A queue is one; so is each topic subscription,
which holds only its own subscriber's copy of what was published (a durable subscription keeps
its MessageQueue while the subscriber is away).
"""

from __future__ import annotations

import collections
import itertools
from typing import Callable, Iterable

from twisted.internet import defer
from twisted.logger import Logger

from pybrokerd.broker.destination import Destination
from pybrokerd.broker.message import Message, now_ms
from pybrokerd.broker.usage import Usage

log = Logger()

AUTO = "auto"
CLIENT = "client"
CLIENT_INDIVIDUAL = "client-individual"
ACK_MODES = (AUTO, CLIENT, CLIENT_INDIVIDUAL)


class TimeStatistic:
    """Count, total, min and max of durations in ms (ActiveMQ's TimeStatisticImpl)."""

    __slots__ = ("count", "total", "min", "max")

    def __init__(self):
        self.count = self.total = self.min = self.max = 0

    def add(self, ms: int) -> None:
        ms = max(ms, 0)  # a producer-set timestamp may be ahead of our clock
        if not self.count or ms < self.min:
            self.min = ms
        if ms > self.max:
            self.max = ms
        self.count += 1
        self.total += ms

    def merge(self, other: "TimeStatistic") -> None:
        if other.count:
            if not self.count or other.min < self.min:
                self.min = other.min
            self.max = max(self.max, other.max)
            self.count += other.count
            self.total += other.total

    @property
    def average(self) -> float:
        return self.total / self.count if self.count else 0.0


class Delivery:
    """One message handed to one consumer, waiting for its ack."""

    __slots__ = ("message", "source", "ack_id", "tx")

    def __init__(self, message: Message, source: "MessageQueue", ack_id: str):
        self.message = message
        self.source = source
        self.ack_id = ack_id
        self.tx = None  # the transaction that acked it, until commit or abort


class Consumer:
    """The broker's side of one protocol subscription.

    `session` is the protocol session that owns it (an IConsumerSession).
    """

    def __init__(self, session, subscription_id: str, destinations: list[Destination], *,
                 ack_mode: str = AUTO, selector: Callable | None = None, selector_text: str = "",
                 prefetch: int = 1000, exclusive: bool = False, durable_name: str | None = None,
                 client_id: str | None = None, no_local: bool = False, priority: int = 0):
        self.session = session
        self.subscription_id = subscription_id
        self.destinations = destinations
        self.ack_mode = ack_mode
        self.selector = selector
        self.selector_text = selector_text
        self.prefetch = max(prefetch, 1)
        self.exclusive = exclusive
        self.durable_name = durable_name
        self.client_id = client_id
        self.no_local = no_local
        # ActiveMQ's consumer priority: a queue gives its messages to the highest-priority
        # consumers with room first (round robin among those), to lower ones only when the
        # higher ones are full
        self.priority = priority
        # noLocal: what its own connection sends is not for it.  A message id begins with
        # the id of the connection that sent it (as ActiveMQ's producer ids), which is how
        # the topic subscription tells them apart
        self.local_prefix = getattr(session, "local_message_prefix", None) if no_local else None
        # a queue gives it any message without asking accepts() (no selector, no noLocal)
        self.takes_all = selector is None and self.local_prefix is None
        self.in_flight: collections.OrderedDict[str, Delivery] = collections.OrderedDict()
        self.by_message_id: dict[str, str] = {}
        self.tx_acked = 0
        self.sources: list[MessageQueue] = []
        self.closed = False
        self.implicit_id = False  # STOMP 1.0 SUBSCRIBE without an id
        self.transformation = None  # STOMP: how map messages are rendered for it
        self.wire_line = None  # the protocol's encoding of its subscription header (cache)
        # does each delivery get an ack id?  Always when it is to be acked; an auto-ack
        # delivery too unless its session says it has no use for one (STOMP sends none)
        self.numbered = ack_mode != AUTO or getattr(session, "numbers_auto_deliveries", True)

    def has_credit(self) -> bool:
        if self.closed or not self.session.writable:
            return False
        if self.ack_mode == AUTO:
            return True
        return len(self.in_flight) - self.tx_acked < self.prefetch

    def accepts(self, message: Message) -> bool:
        if self.local_prefix is not None and message.message_id.startswith(self.local_prefix):
            return False  # noLocal on a queue, as ActiveMQ: it waits for another consumer
        if self.selector is None:
            return True
        return self.selector(message.selector_value)

    def deliver(self, source: "MessageQueue", message: Message) -> None:
        ack_id = self.session.next_ack_id() if self.numbered else None
        if self.ack_mode != AUTO:
            self.in_flight[ack_id] = Delivery(message, source, ack_id)
            source.pending.memory.used += message.size  # held until acked
            self.by_message_id[message.message_id] = ack_id
            if message.persistent and not message.redelivery_count and source.store is not None:
                # remember the delivery in the store: after a crash the message comes back
                # with redelivered:true (ActiveMQ forgets it)
                source.store.mark_delivered(message)
        source.dispatched_count += 1
        # ActiveMQ's "enqueue time": how long a message waited before it was dispatched
        source.dispatch_time.add(now_ms() - message.timestamp)
        self.session.deliver(self, message, ack_id)
        if self.ack_mode == AUTO:
            if message.persistent:
                source.broker.consumed(source, message)
            else:
                source.dequeue_count += 1  # nothing stored, nothing held: gone

    def take(self, ack_ids: Iterable[str]) -> list[Delivery]:
        """Remove these deliveries from the in-flight set and return them."""
        taken = []
        for ack_id in ack_ids:
            delivery = self.in_flight.pop(ack_id)
            delivery.source.pending.memory.used -= delivery.message.size
            self.by_message_id.pop(delivery.message.message_id, None)
            if delivery.tx is not None:
                self.tx_acked -= 1
            taken.append(delivery)
        return taken

    def resolve(self, ack_id: str | None = None, message_id: str | None = None) -> str | None:
        """The in-flight ack id for a 1.2 ack id or a 1.0/1.1 message id, or None."""
        if ack_id is not None:
            return ack_id if ack_id in self.in_flight else None
        return self.by_message_id.get(message_id)

    def up_to(self, ack_id: str) -> list[str]:
        """Cumulative (client) ack: every in-flight delivery up to and including ack_id."""
        ids = []
        for key in self.in_flight:
            ids.append(key)
            if key == ack_id:
                break
        return ids

    def __repr__(self):
        return "<Consumer %s on %s>" % (self.subscription_id, ",".join(map(str, self.destinations)))


class PendingFIFO:
    """Pending messages in arrival order (ActiveMQ's default: priority is not used).

    `memory` (a Usage) counts the bytes of every message held, for producer flow control."""

    def __init__(self, memory: Usage):
        self._items: collections.deque[Message] = collections.deque()
        self.memory = memory

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def append(self, message: Message) -> None:
        self._items.append(message)
        self.memory.used += message.size

    def popleft(self) -> Message:
        message = self._items.popleft()
        self.memory.used -= message.size
        return message

    def pop(self) -> Message:
        message = self._items.pop()
        self.memory.used -= message.size
        return message

    def extend_front(self, messages: list[Message]) -> None:
        self._items.extendleft(reversed(messages))
        self.memory.used += sum(m.size for m in messages)

    def remove_where(self, predicate) -> list[Message]:
        kept, removed = collections.deque(), []
        for m in self._items:
            (removed if predicate(m) else kept).append(m)
        self._items = kept
        self.memory.used -= sum(m.size for m in removed)
        return removed


class PendingByPriority:
    """Pending messages, higher JMS priority first, arrival order within a priority."""

    def __init__(self, memory: Usage):
        self._levels = [collections.deque() for _ in range(10)]
        self._count = 0
        self.memory = memory

    def __len__(self):
        return self._count

    def __iter__(self):
        return itertools.chain.from_iterable(reversed(self._levels))

    def append(self, message: Message) -> None:
        self._levels[message.priority].append(message)
        self._count += 1
        self.memory.used += message.size

    def popleft(self) -> Message:
        for level in reversed(self._levels):
            if level:
                self._count -= 1
                message = level.popleft()
                self.memory.used -= message.size
                return message
        raise IndexError("pop from empty pending list")

    def pop(self) -> Message:
        """The newest message (the last of its level, the newest of those)."""
        newest = max(self, key=lambda m: m.seq)
        self.remove_where(lambda m: m is newest)
        return newest

    def extend_front(self, messages: list[Message]) -> None:
        for m in reversed(messages):
            self._levels[m.priority].appendleft(m)
        self._count += len(messages)
        self.memory.used += sum(m.size for m in messages)

    def remove_where(self, predicate) -> list[Message]:
        removed = []
        for i, level in enumerate(self._levels):
            kept = collections.deque()
            for m in level:
                (removed if predicate(m) else kept).append(m)
            self._levels[i] = kept
        self._count -= len(removed)
        self.memory.used -= sum(m.size for m in removed)
        return removed


class MessageQueue:
    """Pending messages of one queue (or one topic subscription) and the consumers taking them.

    Paging: with a store, at most `window` persistent messages are held in memory.  Past that,
    new persistent messages are only in the store (`paged` counts them) and are read back, in
    order, as consumers drain the window.  The persistent messages in memory (`resident`)
    always precede the paged ones in the store's order, so a refill asks the store for its
    first messages that are not resident.  Non-persistent messages are never in the store and
    always stay in memory.
    """

    window = 1000

    def __init__(self, broker, destination: Destination, store=None, prioritized: bool = False):
        self.broker = broker
        self.destination = destination
        self.store = store
        memory = getattr(broker, "flow", None)
        memory = memory.memory if memory is not None else Usage("memory", "--memory-limit")
        self.pending = PendingByPriority(memory) if prioritized else PendingFIFO(memory)
        self.consumers: list[Consumer] = []
        self.groups: dict[str, Consumer] = {}
        self._next_consumer = 0
        self._by_priority = False  # some consumer has a priority of its own
        self._round_robin = True  # ...or none does, and none is exclusive (see enqueue)
        self._dispatching = False
        self._again = False
        # True after a full pass found nothing it could hand out; cleared whenever consumers or
        # their credit change, so a backlog nobody can take is not rescanned per new message.
        self._stalled = False
        self.resident: set[str] = set()
        self.paged = 0
        self._loading = False
        self.enqueue_count = 0
        self.dequeue_count = 0
        self.dispatched_count = 0
        self.expired_count = 0
        self.enqueue_bytes = 0  # Message.size of all enqueued: their average is a statistic
        self.dispatch_time = TimeStatistic()
        self._purges = 0   # bumped by each purge: a refill read before one is stale
        self._purges_at_refill = 0
        self._purging = 0  # purges reading the store: no refill may start meanwhile

    # -- stats ---------------------------------------------------------------------------
    def in_flight_count(self) -> int:
        return sum(1 for c in self.consumers for d in c.in_flight.values() if d.source is self)

    def size(self) -> int:
        return len(self.pending) + self.in_flight_count() + self.paged

    def memory_usage(self) -> int:
        """Message.size of the messages held in memory (pending and in flight)."""
        return (sum(m.size for m in self.pending)
                + sum(d.message.size for c in self.consumers for d in c.in_flight.values()
                      if d.source is self))

    def reset_statistics(self) -> None:
        self.enqueue_count = self.dequeue_count = self.dispatched_count = self.expired_count = 0
        self.enqueue_bytes = 0
        self.dispatch_time = TimeStatistic()

    # -- messages in ---------------------------------------------------------------------
    def enqueue(self, message: Message) -> None:
        self.enqueue_count += 1
        self.enqueue_bytes += message.size
        if self.store is not None and message.persistent:
            if self.paged or len(self.pending) >= self.window:
                self.paged += 1  # in the store only, read back when the window drains
                return
            self.resident.add(message.message_id)
        if self._stalled or self._dispatching:
            self.pending.append(message)
            if self._dispatching:
                self._again = True
            else:
                self._offer_one()
            return
        consumers = self.consumers
        if (consumers and self._round_robin and not self.pending and not message.expires
                and message.group_id is None):
            # the common case (nothing waiting, no group, no expiry, consumers served in
            # turn): the first one in round-robin order that takes it gets it at once, as a
            # dispatch pass would choose, without the trip through the pending list
            n = len(consumers)
            if n == 1:  # a topic subscriber, a queue with one consumer
                consumer = consumers[0]
                taker = consumer if consumer.has_credit() and (
                    consumer.takes_all or self._accepts(consumer, message)) else None
            else:
                taker = None
                start = self._next_consumer % n
                for i in range(n):
                    position = start + i
                    if position >= n:
                        position -= n
                    consumer = consumers[position]
                    if consumer.has_credit() and (consumer.takes_all
                                                  or self._accepts(consumer, message)):
                        self._next_consumer = position + 1
                        taker = consumer
                        break
            if taker is not None:
                taker.deliver(self, message)
                if self.paged and not self._loading and not self._purging:
                    self._refill()
                return
        self.pending.append(message)
        self.dispatch()

    def requeue(self, messages: list[Message]) -> None:
        """Put unacked messages back at the head of the queue, in their original order."""
        if not messages:
            return
        messages.sort(key=lambda m: m.seq)
        self.pending.extend_front(messages)
        self.wake()

    # -- consumers -----------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        consumer.sources.append(self)
        self._consumers_changed()
        self.wake()

    def remove_consumer(self, consumer: Consumer) -> list[Message]:
        """Detach a consumer; return (and stop tracking) its unacked messages from here."""
        if consumer in self.consumers:
            self.consumers.remove(consumer)
            self._consumers_changed()
        if consumer.sources and self in consumer.sources:
            consumer.sources.remove(self)
        for group, owner in list(self.groups.items()):
            if owner is consumer:
                del self.groups[group]
        mine = [d.ack_id for d in consumer.in_flight.values() if d.source is self]
        returned = [d.message for d in consumer.take(mine)]
        self.wake()
        return returned

    def _consumers_changed(self) -> None:
        self._by_priority = any(c.priority for c in self.consumers)
        self._round_robin = len(self.consumers) < 2 or not (
            self._by_priority or any(c.exclusive for c in self.consumers))

    def active_consumers(self) -> list[Consumer]:
        for c in self.consumers:
            if c.exclusive:
                return [c]
        return self.consumers

    # -- dispatch ------------------------------------------------------------------------
    def wake(self) -> None:
        """Consumers or their credit changed: look at the whole backlog again."""
        self._stalled = False
        self.dispatch()

    def dispatch(self) -> None:
        if self._dispatching:
            self._again = True
            return
        self._dispatching = True
        try:
            while True:
                self._again = False
                self._dispatch_pass()
                if not self._again:
                    break
        finally:
            self._dispatching = False
        if (self.paged and not self._loading and not self._purging
                and len(self.pending) <= self.window // 2):
            self._refill()

    def _refill(self) -> None:
        want = self.window - len(self.pending)
        self._loading = True
        self._paged_at_refill = self.paged
        self._purges_at_refill = self._purges
        d = self.store.recover(want, skip=self.resident)
        d.addCallback(self._refilled, want)
        d.addErrback(self._refill_failed)

    def _refilled(self, messages: list[Message], want: int) -> None:
        self._loading = False
        if self._purges_at_refill != self._purges:
            # a purge took what was paged out while this read was on its way: what it read
            # is gone, and `paged` counts only what arrived after the purge
            self.wake()
            return
        for message in messages:
            if message.message_id in self.resident:
                continue
            message.seq = next(self.broker._seq)
            self.resident.add(message.message_id)
            self.pending.append(message)
        # messages paged out while the store was being read sit behind the ones just read
        arrived = self.paged - self._paged_at_refill
        left = 0 if len(messages) < want else max(self._paged_at_refill - len(messages), 0)
        self.paged = left + arrived
        self.wake()

    def _refill_failed(self, failure) -> None:
        self._loading = False
        from twisted.logger import Logger
        Logger().failure("reading paged messages of {queue}", failure, queue=self.destination)

    def load_window(self):
        """At start-up: read the first window of the store; the rest stays paged."""
        self.paged = self.store.count()
        self._refill()

    def _candidates(self) -> list[Consumer]:
        return [c for c in self.active_consumers() if c.has_credit()]

    def _dispatch_pass(self) -> None:
        if not self.pending or not self.consumers:
            return
        if len(self.consumers) == 1:
            self._pass_to_one(self.consumers[0])
            return
        candidates = self._candidates()
        if not candidates:
            return
        skipped: list[Message] = []
        now = now_ms()
        pending = self.pending
        while pending:
            message = pending.popleft()
            if message.expires and message.is_expired(now):
                self.broker.expired(self, message)
                continue
            consumer = self._choose(message, candidates)
            if consumer is None:
                skipped.append(message)
                continue
            self._hand_over(consumer, message)
            if not consumer.has_credit():
                candidates = [c for c in candidates if c.has_credit()]
                if not candidates:
                    break
        if skipped:
            pending.extend_front(skipped)
        self._stalled = bool(pending) and not self._again

    def _pass_to_one(self, consumer: Consumer) -> None:
        """_dispatch_pass for a single consumer (a topic subscriber, a queue with one reader,
        a connection catching up once its socket has room): what _choose and _hand_over
        decide for it, without asking per message."""
        if not consumer.has_credit():
            return
        skipped: list[Message] = []
        now = now_ms()
        pending = self.pending
        accepts = self._accepts
        groups = self.groups
        while pending:
            message = pending.popleft()
            if message.expires and message.is_expired(now):
                self.broker.expired(self, message)
                continue
            if not consumer.takes_all and not accepts(consumer, message):
                skipped.append(message)
                continue
            group = message.group_id
            if group is not None:  # the one consumer owns every group, until it is closed
                if message.group_seq == -1:
                    groups.pop(group, None)
                else:
                    groups[group] = consumer
            consumer.deliver(self, message)
            self._next_consumer = 1  # (the next in turn after it)
            if not consumer.has_credit():
                break
        if skipped:
            pending.extend_front(skipped)
        self._stalled = bool(pending) and not self._again

    def _offer_one(self) -> None:
        """The backlog is stalled: only the message just appended may find a taker."""
        candidates = self._candidates()
        if not candidates:
            return
        # the new message is the last one; it may only jump the queue if nothing before it
        # can go (that is what stalled means), so try it alone
        message = self.pending.pop()
        if message.expires and message.is_expired():
            self.broker.expired(self, message)
            return
        consumer = self._choose(message, candidates)
        if consumer is None:
            self.pending.append(message)
        else:
            self._hand_over(consumer, message)

    def _choose(self, message: Message, candidates: list[Consumer]) -> Consumer | None:
        group = message.group_id
        if group is not None:
            owner = self.groups.get(group)
            if owner is not None and owner in self.consumers:
                return owner if owner in candidates and self._accepts(owner, message) else None
        # round robin: the first consumer after the last one served that has room and whose
        # selector takes the message (selectors of later ones are not evaluated)
        consumers = self.consumers
        n = len(consumers)
        start = self._next_consumer % n if n else 0
        if self._by_priority:
            # the first taker in round-robin order among those of the highest priority
            best, best_position = None, 0
            for i in range(n):
                position = (start + i) % n
                c = consumers[position]
                if ((best is None or c.priority > best.priority) and c in candidates
                        and self._accepts(c, message)):
                    best, best_position = c, position
            if best is not None:
                self._next_consumer = best_position + 1
                if group is not None:
                    self.groups[group] = best
            return best
        for i in range(n):
            position = (start + i) % n
            c = consumers[position]
            if c in candidates and self._accepts(c, message):
                self._next_consumer = position + 1
                if group is not None:
                    self.groups[group] = c
                return c
        return None

    def _accepts(self, consumer: Consumer, message: Message) -> bool:
        return consumer.accepts(message)

    def _hand_over(self, consumer: Consumer, message: Message) -> None:
        if message.group_id is not None and message.group_seq == -1:
            self.groups.pop(message.group_id, None)
        consumer.deliver(self, message)

    # -- browsing and housekeeping -------------------------------------------------------
    def messages(self) -> list[Message]:
        """Everything in the queue, pending or in flight, in arrival order."""
        in_flight = [d.message for c in self.consumers for d in c.in_flight.values()
                     if d.source is self]
        return sorted(itertools.chain(self.pending, in_flight), key=lambda m: m.seq)

    def discard(self) -> None:
        """The queue (or subscription) is dropped: what it holds no longer counts, and a
        refill still on its way is not taken in (it checks for purges)."""
        self._purges += 1
        self.paged = 0
        self.pending.remove_where(lambda m: True)

    def remove_expired(self, now: int) -> list[Message]:
        return self.pending.remove_where(lambda m: m.expires and m.expires <= now)

    @defer.inlineCallbacks
    def _stored_ids(self, n: int, skip, chunk: int = 10000):
        """The ids of the first n stored messages not in `skip`, read a chunk at a time so
        that a million paged-out bodies are never in memory together."""
        ids, after = [], None
        while len(ids) < n:
            batch = yield self.store.recover(min(n - len(ids), chunk), after, skip=skip)
            if not batch:
                break
            ids.extend(m.message_id for m in batch)
            after = batch[-1].message_id
        return ids

    @defer.inlineCallbacks
    def purge(self):
        """Remove every message that is not in flight to a consumer, paged-out ones included
        (ActiveMQ's QueueViewMBean.purge()); the store removes go in one batch.
        -> Deferred firing with the number of messages removed, once that is durable.

        What is in memory goes at once.  The paged-out messages are the oldest stored ones
        that are not resident, and exactly `paged` of them: they are read back (ids only
        matter) while refills wait, so that messages arriving meanwhile, which the store
        keeps behind them, are not taken.  The caller serialises purges of one queue.
        """
        removed = self.pending.remove_where(lambda m: True)
        count = len(removed)
        ids = []
        if self.store is not None:
            ids = [m.message_id for m in removed if m.message_id in self.resident]
            self.resident.difference_update(ids)
        paged, self.paged = self.paged, 0
        self._purges += 1
        self._purging += 1
        try:
            if paged:
                try:
                    stored = yield self._stored_ids(paged, skip=self.resident | set(ids))
                except Exception:
                    # nothing was removed from the store: put back what was taken
                    self.paged += paged
                    self.resident.update(ids)
                    self.pending.extend_front(removed)
                    raise
                ids.extend(stored)
                count += len(stored)
            done = (self.broker.store.transaction([("remove", self.store, i) for i in ids])
                    if ids else defer.succeed(None))
        finally:
            self._purging -= 1
        self.dequeue_count += count
        self.wake()  # what was paged out after the purge began may be read in now
        yield done
        return count


class TopicSubscription(MessageQueue):
    """One subscriber's copy of what is published to the topics it matches.

    The selector is applied when a message is published, so what sits here is already wanted.
    A durable subscription outlives its consumer and keeps collecting while it is away.
    """

    def __init__(self, broker, destination: Destination, patterns: list, selector=None,
                 selector_text: str = "", store=None, durable_key=None):
        super().__init__(broker, destination, store=store,
                         prioritized=getattr(broker, "prioritized", False))
        self.patterns = patterns  # (kind, predicate on names) pairs
        self.selector = selector
        self.selector_text = selector_text
        self.durable_key = durable_key
        # the message id prefix of a noLocal subscriber's own connection (see Consumer)
        self.no_local_session: str | None = None
        self._matches: dict = {}  # destination -> does a pattern match it (asked per publish)

    def wants(self, message: Message) -> bool:
        dest = message.destination
        matched = self._matches.get(dest)
        if matched is None:
            matched = any(kind == dest.kind and match(dest.name) for kind, match in self.patterns)
            if len(self._matches) >= 1024:
                self._matches.clear()  # many one-off topics: stay bounded
            self._matches[dest] = matched
        if not matched:
            return False
        if self.no_local_session is not None and message.message_id.startswith(self.no_local_session):
            return False
        return self.selector is None or self.selector(message.selector_value)

    def add_consumer(self, consumer: Consumer) -> None:
        self.no_local_session = consumer.local_prefix
        super().add_consumer(consumer)

    def remove_consumer(self, consumer: Consumer) -> list[Message]:
        if consumer.local_prefix is not None and consumer.local_prefix == self.no_local_session:
            self.no_local_session = None
        return super().remove_consumer(consumer)

    def _accepts(self, consumer: Consumer, message: Message) -> bool:
        return True

    discarded = 0  # messages dropped because the subscriber did not keep up

    def enqueue(self, message: Message) -> None:
        limit = self.broker.topic_pending_limit
        if limit and self.durable_key is None and len(self.pending) >= limit:
            # a non-durable subscriber that stopped reading must not grow broker memory
            # without bound: keep its newest `limit` messages (ActiveMQ's
            # constantPendingMessageLimitStrategy) and say so
            self.pending.popleft()
            self.discarded += 1
            if self.discarded == 1 or self.discarded % 10000 == 0:
                log.warn("slow consumer on {dest}: more than {limit} messages pending; "
                         "{n} oldest discarded so far (--topic-pending-limit)",
                         dest=self.destination.stomp(), limit=limit, n=self.discarded)
        super().enqueue(message)
