"""The persistence SPI every store meets (see ARCHITECTURE.md).

Everything that touches the disk returns a Deferred that fires once the data is durable
(fsync done, under the ``always`` sync policy).  The broker keeps its own in-memory view of
queues; a store only has to remember, atomically and durably, what the broker tells it, and
give it back on recovery.

Durable topic subscriptions are kept per subscription: each one has its own message store
(``subscription_store``), so an offline subscriber's backlog is recovered like a queue.
"""

from zope.interface import Attribute, Interface


class IMessageStore(Interface):
    """The persistent messages of one destination (a queue or one durable subscription)."""

    name = Attribute("the store's key: 'queue:<name>' or 'sub:<client-id>:<subscription>'")

    def add(message):
        """Store a persistent message. -> Deferred firing when durable."""

    def remove(message_id):
        """Forget a message (acked, expired, moved). -> Deferred firing when durable."""

    def update(message):
        """Rewrite a stored message (its redelivery count changed). -> Deferred."""

    def mark_delivered(message):
        """Remember, lazily, that a message was delivered, so that after a crash it comes
        back with redelivered:true.  A store may wait a moment and drop the mark when the
        message is removed meanwhile (the usual case: it is acked at once).  No result."""

    def recover(max_count, after=None, skip=None):
        """Up to max_count messages in arrival order, starting after message id `after`, and
        leaving out the ids in the container `skip` (the broker's paging passes the ids it
        already holds in memory, which all sit at the front).
        -> Deferred firing with a list of Message."""

    def get(message_id):
        """One stored message by id. -> Deferred firing with the Message or None."""

    def get_many(message_ids):
        """The stored messages among these ids, in one read. -> Deferred firing with a list."""

    def count():
        """Number of stored messages (int, no I/O)."""

    def bytes():
        """Bytes of stored message bodies (int, no I/O)."""


class IPersistenceAdapter(Interface):
    """A whole store: the catalogue of destinations and atomic batches across them."""

    def open():
        """Open and recover. -> Deferred firing when ready."""

    def close():
        """Flush and close. -> Deferred."""

    def queue_store(name):
        """The IMessageStore for queue `name` (created on first use)."""

    def subscription_store(client_id, subscription_name):
        """The IMessageStore holding one durable topic subscription's pending messages."""

    def add_subscription(info):
        """Record a durable subscription (dict: client_id, name, destination, selector). -> Deferred."""

    def delete_subscription(client_id, subscription_name):
        """Remove a durable subscription and its pending messages. -> Deferred."""

    def subscriptions():
        """The durable subscription records (list of dicts, no I/O after open)."""

    def destinations():
        """Names of the queues that have a store (list of str, no I/O after open)."""

    def remove_destination(name):
        """Drop a queue and all of its messages. -> Deferred."""

    def transaction(operations, durable=True):
        """Apply [('add', store, message) | ('remove', store, message_id) |
        ('producer', None, (producer_id, sequence))] atomically.  A 'producer' operation
        records the highest sequence number seen from a producer (duplicate suppression
        across failover); (producer_id, None) forgets it.
        -> Deferred firing when the whole batch is durable.  durable=False: nobody waits
        for durability (an auto-ack's remove, a send without a receipt); the Deferred may
        fire once the batch is written, before it is synced."""

    def producers():
        """The recorded producer sequences: {producer_id: (sequence, unix time recorded)}
        (no I/O after open)."""

    def checkpoint():
        """Make recovery start from here. -> Deferred."""

    def size():
        """Bytes used on disk (int)."""

    def stored_bytes():
        """Body bytes of the messages held, kept as they come and go (int, cheap to read:
        producer flow control checks it on every persistent send)."""
