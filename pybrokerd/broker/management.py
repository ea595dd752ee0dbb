"""Management destinations: ActiveMQ's statistics plugin, and purge.

A message sent (to a queue or a topic, as the client likes) to one of these names is a request
to the broker, never stored or delivered as such:

``ActiveMQ.Statistics.Destination.<name or wildcard>``
    ActiveMQ's StatisticsBrokerPlugin (5.17): one map message per matching destination is
    sent to the request's reply-to.  As in ActiveMQ, the request's kind says which
    destinations are looked at: a request sent to a queue matches queues, one sent to a topic
    matches topics.  With the property ``ActiveMQ.Statistics.Destination.List.End.With.Null``
    an empty map message follows the last one (so a client knows the list is complete), with
    ``ActiveMQ.Statistics.Destination.Include.First.Message.Timestamp`` a queue's reply also
    has ``firstMessageTimestamp``.
``ActiveMQ.Statistics.Broker``
    One map message with broker-wide figures (property ``ActiveMQ.Statistics.Broker.Reset``:
    the counters are zeroed first).
``pybrokerd.Admin.Purge.<queue name or wildcard>``
    Ours (ActiveMQ purges only through JMX): removes every message of the matching queue(s)
    that is not in flight to a consumer, durably, then, if the request has a reply-to, sends
    one reply saying how many went.

Replies are non-persistent map messages of type ``Advisory`` carrying the request's
correlation-id, as ActiveMQ's plugin sends them; the protocol renders the map (STOMP: per the
subscription's ``transformation``).  The map keys are those of ActiveMQ's StatisticsBroker;
what each value means here is in docs/stomp.md ("Management destinations").

Unlike ActiveMQ, which routes a statistics request without a reply-to as an ordinary message
into a queue named like the request, a request this module cannot answer fails: the sender
gets an ERROR naming what is wrong.
"""

from __future__ import annotations

import itertools

from twisted.internet import defer
from twisted.logger import Logger

from pybrokerd.broker.core import BrokerError
from pybrokerd.broker.destination import QUEUE, TEMP_TOPIC, TOPIC, Destination, compile_pattern
from pybrokerd.broker.message import IdGenerator, Int32, Message
from pybrokerd.broker.queue import TimeStatistic

log = Logger()

STATISTICS = "ActiveMQ.Statistics"
DESTINATION_STATISTICS = "ActiveMQ.Statistics.Destination"
BROKER_STATISTICS = "ActiveMQ.Statistics.Broker"
SUBSCRIPTION_STATISTICS = "ActiveMQ.Statistics.Subscription"
END_OF_LIST = "ActiveMQ.Statistics.Destination.List.End.With.Null"
FIRST_MESSAGE_TIMESTAMP = "ActiveMQ.Statistics.Destination.Include.First.Message.Timestamp"
RESET = "ActiveMQ.Statistics.Broker.Reset"
PURGE = "pybrokerd.Admin.Purge"
ADVISORY = "Advisory"  # the JMS type of ActiveMQ's advisory and statistics messages
PURGED = "purged"  # reply header: how many messages the purge removed
PURGED_DESTINATION = "purged-destination"  # reply header: the queues purged, comma-separated


class ManagementError(BrokerError):
    """A management request the broker cannot carry out; str(e) tells the client why."""


def is_management(destination: Destination) -> bool:
    name = destination.name
    return not destination.is_temporary and (
        (name[:1] == "A" and name.startswith(STATISTICS)) or
        (name[:1] == "p" and name.startswith(PURGE)))


class TopicCounters:
    """What is counted per topic (its subscriptions count the rest)."""

    __slots__ = ("enqueue_count", "enqueue_bytes")

    def __init__(self):
        self.enqueue_count = 0
        self.enqueue_bytes = 0


class Management:
    def __init__(self, broker):
        self.broker = broker
        self.topics: dict[Destination, TopicCounters] = {}
        self._prune_at = 1000
        # set by the service: listener URIs by ActiveMQ's connector names ("stomp",
        # "stomp+ssl", "openwire", "ssl") and the data directory, for the broker statistics
        self.connectors: dict[str, str] = {}
        self.data_directory = ""
        ids = IdGenerator()
        self.broker_id = ids.connection_id()
        self._producer_id = ids.connection_id()  # replies are "<producer>:0:0:<n>", as ActiveMQ
        self._reply_seq = itertools.count(1)
        self._purge_locks: dict[Destination, defer.DeferredLock] = {}

    # -- the broker's hooks ----------------------------------------------------------------
    def request(self, message: Message) -> defer.Deferred | None:
        """The Deferred of a management request (fires once it is answered, fails with a
        ManagementError the sender should see), or None for any other message."""
        dest = message.destination
        if not self.handles(dest):
            return None
        name = dest.name
        if name.startswith(STATISTICS):
            if name.startswith(DESTINATION_STATISTICS):
                handler = self._destination_statistics
            elif name.startswith(SUBSCRIPTION_STATISTICS):
                return defer.fail(ManagementError(
                    "%s is not supported by pybrokerd (use %s.<name> and %s)"
                    % (SUBSCRIPTION_STATISTICS, DESTINATION_STATISTICS, BROKER_STATISTICS)))
            elif name.startswith(BROKER_STATISTICS):
                handler = self._broker_statistics
            else:
                return None  # ActiveMQ too routes other ActiveMQ.Statistics.* names normally
            try:
                reply_to = self._reply_to(message, required=True)
            except ManagementError as e:
                return defer.fail(e)
            # never raise: a COMMIT runs requests in a loop that must not stop half-way
            return defer.maybeDeferred(handler, message, reply_to)
        return defer.maybeDeferred(self._purge, message)  # (handles() said PURGE)

    def handles(self, destination) -> bool:
        """Might request() take a message sent here (cheap, no side effect)?"""
        name = destination.name
        first = name[:1]  # on every send: the first letter rules out nearly everything
        if (first != "A" and first != "p") or destination.is_temporary:
            return False
        return name.startswith(STATISTICS) or name.startswith(PURGE)

    def published(self, message: Message) -> None:
        """A message is being routed to a topic (queues count their own)."""
        dest = message.destination
        counters = self.topics.get(dest)
        if counters is None:
            if dest.kind == TEMP_TOPIC and dest not in self.broker.temp_owners:
                return
            counters = self.topics[dest] = TopicCounters()
            if len(self.topics) > self._prune_at:
                self._prune_topics()
        counters.enqueue_count += 1
        counters.enqueue_bytes += message.size

    def _prune_topics(self) -> None:
        """Forget deleted temporary topics (amortised: the limit doubles with what is left)."""
        for dest in [d for d in self.topics
                     if d.kind == TEMP_TOPIC and d not in self.broker.temp_owners]:
            del self.topics[dest]
        self._prune_at = max(1000, 2 * len(self.topics))

    # -- requests and replies --------------------------------------------------------------
    def _reply_to(self, request: Message, required: bool) -> Destination | None:
        reply_to = request.reply_to
        what = request.destination.name
        if reply_to is None:
            if required:
                raise ManagementError(
                    "%s needs a reply-to header naming the destination for the reply "
                    "(e.g. reply-to:/temp-queue/stats)" % what)
            return None
        if not isinstance(reply_to, Destination):
            raise ManagementError("%s: reply-to %r is not a destination (it must begin with "
                                  "/queue/, /topic/, /temp-queue/ or /temp-topic/)"
                                  % (what, reply_to))
        if is_management(reply_to):
            raise ManagementError("%s: reply-to %s is itself a management destination"
                                  % (what, reply_to.stomp()))
        return reply_to

    def _reply(self, request: Message, reply_to: Destination, entries: dict,
               properties: dict | None = None) -> defer.Deferred:
        reply = Message("%s:0:0:%d" % (self._producer_id, next(self._reply_seq)), reply_to,
                        properties=properties, persistent=False,
                        correlation_id=request.correlation_id, type=ADVISORY)
        reply.map_body = entries
        return self.broker.send(reply)

    # -- ActiveMQ.Statistics.Destination ---------------------------------------------------
    @defer.inlineCallbacks
    def _destination_statistics(self, request: Message, reply_to: Destination):
        name = request.destination.name[len(DESTINATION_STATISTICS):]
        if name.startswith("."):
            name = name[1:]
        query = name.replace(END_OF_LIST, "")
        end_of_list = query != name or END_OF_LIST in request.properties
        if query != name:
            query = query.rstrip(".")  # "<query>.ActiveMQ...End.With.Null": that dot separates
        if not query:
            raise ManagementError(
                "%s needs a destination name or wildcard after it, e.g. %s.orders or %s.>"
                % (DESTINATION_STATISTICS, DESTINATION_STATISTICS, DESTINATION_STATISTICS))
        match = compile_pattern(query)
        with_first = FIRST_MESSAGE_TIMESTAMP in request.properties
        sent = []
        if request.destination.is_queue:
            for dest, queue in sorted(self.broker.queues.items()):
                if dest.kind != QUEUE or not match(dest.name):
                    continue
                entries = self.queue_statistics(queue)
                if with_first:
                    first = yield self._first_timestamp(queue)
                    if first is not None:
                        entries["firstMessageTimestamp"] = first
                sent.append(self._reply(request, reply_to, entries))
        else:
            for dest in self.topic_names():
                if match(dest.name):
                    sent.append(self._reply(request, reply_to, self.topic_statistics(dest)))
        if end_of_list:
            sent.append(self._reply(request, reply_to, {}))
        if sent:
            yield defer.gatherResults(sent, consumeErrors=True)

    def _common(self) -> dict:
        return {"brokerName": self.broker.name, "brokerId": self.broker_id}

    def queue_statistics(self, queue) -> dict:
        """ActiveMQ's destination statistics of one queue (a MessageQueue)."""
        entries = self._common()
        entries["destinationName"] = queue.destination.activemq()
        entries.update(self._counts([queue], queue.enqueue_count, queue.enqueue_bytes))
        entries["consumerCount"] = len(queue.consumers)
        entries["producerCount"] = 0
        return entries

    def topic_statistics(self, topic: Destination) -> dict:
        """A topic's figures: its own publish counts, and those of the subscriptions that
        take its messages (a wildcard subscription shows under every topic it matches)."""
        counters = self.topics.get(topic) or TopicCounters()
        subs = [s for s in list(self.broker.topic_subscriptions)
                if any(kind == topic.kind and match(topic.name) for kind, match in s.patterns)]
        entries = self._common()
        entries["destinationName"] = topic.activemq()
        entries.update(self._counts(subs, counters.enqueue_count, counters.enqueue_bytes))
        entries["consumerCount"] = _subscription_consumers(subs)
        entries["producerCount"] = 0
        return entries

    @staticmethod
    def _counts(holders, enqueued: int, enqueued_bytes: int) -> dict:
        """The figures summed over message holders (queues or topic subscriptions)."""
        time = TimeStatistic()
        for holder in holders:
            time.merge(holder.dispatch_time)
        return {
            "size": sum(h.size() for h in holders),
            "enqueueCount": enqueued,
            "dequeueCount": sum(h.dequeue_count for h in holders),
            "dispatchCount": sum(h.dispatched_count for h in holders),
            "expiredCount": sum(h.expired_count for h in holders),
            "inflightCount": sum(h.in_flight_count() for h in holders),
            "messagesCached": sum(len(h.pending) for h in holders),
            "averageMessageSize": enqueued_bytes // enqueued if enqueued else 0,
            "memoryPercentUsage": Int32(0),
            "memoryUsage": sum(h.memory_usage() for h in holders),
            "memoryLimit": 0,
            "averageEnqueueTime": float(time.average),
            "maxEnqueueTime": float(time.max),
            "minEnqueueTime": float(time.min),
        }

    def topic_names(self) -> list[Destination]:
        """Topics published to, and those named by a subscription (not wildcards), sorted."""
        names = {d for d in self.topics if d.kind == TOPIC}
        for sub in list(self.broker.topic_subscriptions):
            named = list(getattr(sub, "topics", None) or [sub.destination])
            named += [d for c in sub.consumers for d in c.destinations]
            names.update(d for d in named if d.kind == TOPIC and not d.is_wildcard)
        return sorted(names)

    @defer.inlineCallbacks
    def _first_timestamp(self, queue):
        """The timestamp of the queue's first message, or None when it is empty."""
        held = queue.messages()
        if held:
            return held[0].timestamp
        if queue.paged and queue.store is not None:
            stored = yield queue.store.recover(1, skip=queue.resident)
            if stored:
                return stored[0].timestamp
        return None

    # -- ActiveMQ.Statistics.Broker --------------------------------------------------------
    def _broker_statistics(self, request: Message, reply_to: Destination) -> defer.Deferred:
        if RESET in request.properties:
            self.reset_statistics()
        return self._reply(request, reply_to, self.broker_statistics())

    def broker_statistics(self) -> dict:
        queues = list(self.broker.queues.values())
        subs = list(self.broker.topic_subscriptions)
        topics = list(self.topics.values())
        flow = self.broker.flow
        entries = self._common()
        entries.update(self._counts(
            queues + subs,
            sum(q.enqueue_count for q in queues) + sum(t.enqueue_count for t in topics),
            sum(q.enqueue_bytes for q in queues) + sum(t.enqueue_bytes for t in topics)))
        entries.update({
            "storePercentUsage": Int32(flow.store.percent()), "storeUsage": self._store_usage(),
            "storeLimit": flow.store.limit,
            "tempPercentUsage": Int32(0), "tempUsage": 0, "tempLimit": 0,
            "memoryLimit": flow.memory.limit, "memoryPercentUsage": Int32(flow.memory.percent()),
            "consumerCount": sum(len(q.consumers) for q in queues) + _subscription_consumers(subs),
            "producerCount": 0,
            "openwire": self.connectors.get("openwire", ""),
            "stomp": self.connectors.get("stomp", ""),
            "ssl": self.connectors.get("ssl", ""),
            "stomp+ssl": self.connectors.get("stomp+ssl", ""),
            "vm": "",
            "dataDirectory": self.data_directory,
        })
        return entries

    def _store_usage(self) -> int:
        try:
            return int(self.broker.store.size())
        except Exception:  # a store without a size: say 0 rather than fail the request
            log.failure("store size for the broker statistics")
            return 0

    def reset_statistics(self) -> None:
        for holder in list(self.broker.queues.values()) + list(self.broker.topic_subscriptions):
            holder.reset_statistics()
        for counters in self.topics.values():
            counters.enqueue_count = counters.enqueue_bytes = 0

    # -- pybrokerd.Admin.Purge -------------------------------------------------------------
    def _purge(self, request: Message) -> defer.Deferred:
        name = request.destination.name[len(PURGE):]
        try:
            if name[:1] != "." or len(name) < 2:
                raise ManagementError("name the queue to purge: %s.<queue name or wildcard>"
                                      % PURGE)
            name = name[1:]
            reply_to = self._reply_to(request, required=False)
            match = compile_pattern(name)
            targets = [q for d, q in sorted(self.broker.queues.items())
                       if d.kind == QUEUE and match(d.name)]
            if not targets:
                if Destination(QUEUE, name).is_wildcard:
                    raise ManagementError("no queue matches /queue/%s" % name)
                raise ManagementError("no such queue: /queue/%s" % name)
        except ManagementError as e:
            return defer.fail(e)
        return self._purge_queues(request, reply_to, targets)

    @defer.inlineCallbacks
    def _purge_queues(self, request: Message, reply_to, targets):
        counts = yield defer.gatherResults([self.purge_queue(q) for q in targets],
                                           consumeErrors=True)
        purged = {q.destination: n for q, n in zip(targets, counts)}
        total = sum(counts)
        names = ",".join(d.stomp() for d in purged)
        log.info("purged {total} messages from {queues}", total=total, queues=names)
        if reply_to is not None:
            yield self._reply(request, reply_to,
                              {d.activemq(): n for d, n in purged.items()},
                              properties={PURGED: str(total), PURGED_DESTINATION: names})

    def purge_queue(self, queue) -> defer.Deferred:
        """Purges of one queue run one after the other (MessageQueue.purge needs that)."""
        dest = queue.destination
        lock = self._purge_locks.get(dest)
        if lock is None:
            lock = self._purge_locks[dest] = defer.DeferredLock()

        def release(result):
            if not lock.locked and not lock.waiting and self._purge_locks.get(dest) is lock:
                del self._purge_locks[dest]
            return result
        return lock.run(queue.purge).addBoth(release)


def _subscription_consumers(subs) -> int:
    """Consumers of topic subscriptions; a durable one counts as one while its subscriber is
    away, as ActiveMQ counts it."""
    return sum(len(s.consumers) or (1 if s.durable_key is not None else 0) for s in subs)
