"""The memory store: the whole contract, nothing survives a restart."""

import time

from twisted.internet import defer
from zope.interface import implementer

from stores.interfaces import IMessageStore, IPersistenceAdapter


@implementer(IMessageStore)
class MemoryMessageStore:
    def __init__(self, name, adapter=None):
        self.name = name
        self.adapter = adapter
        self._messages = {}  # insertion-ordered: arrival order
        self._bytes = 0

    def _count_bytes(self, delta):
        self._bytes += delta
        if self.adapter is not None:
            self.adapter._stored_total += delta

    def _add(self, message):
        old = self._messages.get(message.message_id)
        self._count_bytes(len(message.body) - (len(old.body) if old is not None else 0))
        self._messages[message.message_id] = message

    def _remove(self, message_id):
        message = self._messages.pop(message_id, None)
        if message is not None:
            self._count_bytes(-len(message.body))

    def add(self, message):
        self._add(message)
        return defer.succeed(None)

    def remove(self, message_id):
        self._remove(message_id)
        return defer.succeed(None)

    def update(self, message):
        if message.message_id in self._messages:
            self._add(message)
        return defer.succeed(None)

    def mark_delivered(self, message):
        pass  # nothing survives a restart anyway

    def recover(self, max_count, after=None, skip=None):
        ids = iter(self._messages)
        if after is not None:
            for message_id in ids:
                if message_id == after:
                    break
        result = []
        for message_id in ids:
            if len(result) >= max_count:
                break
            if skip is not None and message_id in skip:
                continue
            result.append(self._messages[message_id])
        return defer.succeed(result)

    def get(self, message_id):
        return defer.succeed(self._messages.get(message_id))

    def get_many(self, message_ids):
        return defer.succeed([self._messages[i] for i in message_ids if i in self._messages])

    def count(self):
        return len(self._messages)

    def bytes(self):
        return self._bytes


@implementer(IPersistenceAdapter)
class MemoryPersistenceAdapter:
    durable = False

    def __init__(self, directory=None, sync="always", reactor=None, **options):
        self.directory = directory
        self._queues = {}
        self._subscription_stores = {}
        self._subscriptions = {}
        self._producers = {}
        self._stored_total = 0

    def stored_bytes(self):
        """Body bytes of the messages held (what --store-limit bounds)."""
        return self._stored_total

    def producers(self):
        return dict(self._producers)

    def open(self):
        return defer.succeed(None)

    def close(self):
        return defer.succeed(None)

    def abandon(self):
        pass

    def queue_store(self, name):
        store = self._queues.get(name)
        if store is None:
            store = self._queues[name] = MemoryMessageStore("queue:" + name, self)
        return store

    def subscription_store(self, client_id, subscription_name):
        key = (client_id, subscription_name)
        store = self._subscription_stores.get(key)
        if store is None:
            store = self._subscription_stores[key] = MemoryMessageStore(
                "sub:%s:%s" % key, self)
        return store

    def add_subscription(self, info):
        self._subscriptions[(info["client_id"], info["name"])] = dict(info)
        return defer.succeed(None)

    def delete_subscription(self, client_id, subscription_name):
        self._subscriptions.pop((client_id, subscription_name), None)
        store = self._subscription_stores.pop((client_id, subscription_name), None)
        if store is not None:
            self._stored_total -= store._bytes
        return defer.succeed(None)

    def subscriptions(self):
        return list(self._subscriptions.values())

    def destinations(self):
        return list(self._queues)

    def remove_destination(self, name):
        store = self._queues.pop(name, None)
        if store is not None:
            self._stored_total -= store._bytes
        return defer.succeed(None)

    def transaction(self, operations, durable=True):
        for op, store, arg in operations:
            if op == "producer":
                if arg[1] is None:
                    self._producers.pop(arg[0], None)
                else:
                    self._producers[arg[0]] = (arg[1], int(time.time()))
            elif op == "add":
                store._add(arg)
            else:
                store._remove(arg)
        return defer.succeed(None)

    def checkpoint(self):
        return defer.succeed(None)

    def size(self):
        return 0
