"""The shared half of every persistent store: in-memory catalogue + one group-committing writer.

A backend (journal, lmdb, leveldb) only knows how to apply one batch of operations atomically,
make it durable (sync), read one stored message back, and list what it holds when it opens.
Everything else lives here, once:

* the catalogue, kept in the reactor thread: for each store key ("queue:<name>",
  "sub:<client>:<name>") the message ids in arrival order, each mapped to the Message itself
  while its write is in flight (Unwritten) and to a packed int (add sequence << 32 | body
  size) once written; the sequence orders adds store-wide and is how a backend finds a
  message again;
* the hand-off: what the broker submits during one turn of the reactor is given to the writer
  at the end of that turn, with each add that was removed in the same turn dropped together
  with its remove (a message an auto-ack consumer took at once costs no I/O); an action left
  with nothing to write is answered there and then, without a trip through the writer thread;
* the wait for acks: while consumers ack fast, a message already delivered to a consumer that
  acks it is handed over only once acked (then dropped with its remove) or after a few ms
  (_hold);
* the writer thread: it takes every operation pending from every connection, drops an add and
  its remove found in the same batch (a message acked before it was written costs no I/O),
  applies the rest as one atomic batch with one sync, then fires all their Deferreds in the
  reactor thread;
* the sync policy: ``always`` (sync every batch before anybody hears "done"), ``periodic``
  (at most once a second; a crash may lose the last second), ``never`` (leave it to the OS).
"""

from __future__ import annotations

import collections
import errno
import os
import threading
import time

from twisted.internet import defer, threads
from twisted.logger import Logger
from zope.interface import implementer

from stores import serialization
from stores.interfaces import IMessageStore, IPersistenceAdapter

log = Logger()

SYNC_POLICIES = ("always", "periodic", "never")
PROBE_ID = "\0pybrokerd-probe"  # the producer record a recovery probe writes and removes


class StoreWriteError(Exception):
    """A batch could not be written (disk full, I/O error); str() says so for a client."""

    def __init__(self, error, directory):
        super().__init__("the store could not write it (%s in %s)" % (describe_error(error), directory))
        self.error = error


def describe_error(error) -> str:
    if isinstance(error, OSError) and error.strerror:
        return "%s (errno %s)" % (error.strerror, error.errno)
    return str(error) or type(error).__name__


class Histogram:
    """Counts of observations per upper bound, their sum and count (what Prometheus wants);
    updated by the writer thread, read by the metrics page."""

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                break
        else:
            i = len(self.bounds)
        self.counts[i] += 1
        self.sum += value
        self.count += 1


SYNC_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class Catalogue:
    """What a backend found on open: store key -> [(message id, seq, size)] in arrival order,
    durable subscription records, and the queue names."""

    def __init__(self):
        self.messages: dict[str, list[tuple[str, object]]] = collections.defaultdict(list)
        self.subscriptions: dict[str, dict] = {}
        self.queues: set[str] = set()
        self.producers: dict[str, list] = {}  # producer id -> [sequence, unix time]
        self.next_seq = 1  # one more than the highest add sequence stored


class Unwritten:
    """A catalogue entry whose add is still on its way to the disk."""

    __slots__ = ("message", "seq")

    def __init__(self, message, seq):
        self.message = message
        self.seq = seq


@implementer(IMessageStore)
class StoreView:
    """One destination's slice of the catalogue; the IMessageStore the broker holds."""

    def __init__(self, adapter: "BatchingAdapter", key: str):
        self.adapter = adapter
        self.name = key
        self.entries: dict[str, object] = {}  # message id -> Unwritten, or seq << 32 | size
        self._bytes = 0

    def add(self, message):
        return self.adapter.transaction([("add", self, message)])

    def remove(self, message_id):
        return self.adapter.transaction([("remove", self, message_id)])

    def update(self, message):
        """Rewrite a stored message in place (same position)."""
        op = self._rewrite_op(message)
        if op is None:
            return defer.succeed(None)
        return self.adapter._submit([op], durable=False)

    def mark_delivered(self, message):
        self.adapter._mark_delivered(self, message)

    def _rewrite_op(self, message):
        entry = self.entries.get(message.message_id)
        if entry is None:
            return None
        if isinstance(entry, Unwritten):
            seq, old = entry.seq, len(entry.message.body)
        else:
            seq, old = entry >> 32, entry & 0xFFFFFFFF
        rewritten = Unwritten(message, seq)
        self.entries[message.message_id] = rewritten
        self._bytes += len(message.body) - old
        self.adapter._stored_total += len(message.body) - old
        return ("rewrite", self, rewritten)

    def recover(self, max_count, after=None, skip=None):
        key = self.name
        ids = iter(self.entries)
        if after is not None:
            for message_id in ids:
                if message_id == after:
                    break
        wanted = []
        for message_id in ids:
            if len(wanted) >= max_count:
                break
            if skip is not None and message_id in skip:
                continue
            wanted.append((message_id, self.entries[message_id]))
        return self.adapter._read_many(key, wanted)

    def get(self, message_id):
        return self.get_many([message_id]).addCallback(lambda found: found[0] if found else None)

    def get_many(self, message_ids):
        """The stored messages among these ids, read in one go."""
        wanted = [(i, self.entries[i]) for i in message_ids if i in self.entries]
        return self.adapter._read_many(self.name, wanted)

    def count(self):
        return len(self.entries)

    def bytes(self):
        return self._bytes


class _Pending:
    __slots__ = ("ops", "deferred", "durable", "partner", "followers")

    def __init__(self, ops, deferred, durable=True):
        self.ops = ops
        self.deferred = deferred
        self.durable = durable
        # a later pending whose remove cancelled an add of this one: this one is answered
        # with it, not before (it may move the message on: a COMMIT that acks it and sends
        # another, a dead-lettering; until it is written, the message is nowhere durable)
        self.partner = None
        self.followers = None  # the pendings answered with this one

    def answer(self, failure=None) -> None:
        partner = self.partner
        if partner is not None and not partner.deferred.called:
            if partner.followers is None:
                partner.followers = []
            partner.followers.append(self)
            return
        if failure is None:
            self.deferred.callback(None)
        else:
            self.deferred.errback(failure)
        if self.followers:
            followers, self.followers = self.followers, None
            for follower in followers:
                follower.partner = None
                follower.answer(failure)


def _drop_cancelled(batch: list[_Pending]) -> None:
    """Drop from the pendings of `batch`, in place, each add whose remove follows it in the
    batch, with that remove (never written: nothing to remove either), and each rewrite of a
    message removed after it.  An add's pending is then answered with its remove's (see
    _Pending.partner)."""
    added = {}
    rewrites = {}
    dropped = False
    for pending in batch:
        ops = pending.ops
        for i, op in enumerate(ops):
            kind = op[0]
            if kind == "add":
                added[(op[1].name, op[2].message.message_id)] = (pending, i)
            elif kind == "rewrite":
                rewrites.setdefault((op[1].name, op[2].message.message_id), []).append((ops, i))
            elif kind == "remove":
                where = (op[1].name, op[2])
                for other, j in rewrites.pop(where, ()):
                    other[j] = None
                    dropped = True
                hit = added.pop(where, None)
                if hit is not None:
                    adder = hit[0]
                    adder.ops[hit[1]] = None
                    if adder is not pending:
                        adder.partner = pending  # (the last in order: answered last)
                    ops[i] = None
                    dropped = True
    if dropped:
        for pending in batch:
            if None in pending.ops:
                pending.ops = [op for op in pending.ops if op is not None]


@implementer(IPersistenceAdapter)
class BatchingAdapter:
    """Base class of the persistent stores.  Subclasses implement the backend hooks below."""

    durable = True
    periodic_sync_interval = 1.0
    # can a batch nobody waits on for durability be written without a sync (synced with the
    # next batch that needs it, or within periodic_sync_interval)?  LMDB cannot do that safely.
    lazy_sync = True
    maintenance_interval = 5.0

    def __init__(self, directory, sync: str = "always", reactor=None, ack_wait=None,
                 **options):
        if sync not in SYNC_POLICIES:
            raise ValueError("sync policy must be one of %s" % ", ".join(SYNC_POLICIES))
        if reactor is None:
            from twisted.internet import reactor
        self.directory = directory
        self.sync_policy = sync
        self.reactor = reactor
        if ack_wait is not None:
            self.ack_wait = ack_wait
        self.options = options
        self._views: dict[str, StoreView] = {}
        self._subscriptions: dict[str, dict] = {}
        self._queues: set[str] = set()
        self._producers: dict[str, tuple] = {}
        self._marks: dict = {}  # (store key, message id) -> (view, message) delivered
        self._marks_call = None
        self._staged: list[_Pending] = []  # submitted this turn of the reactor (its thread only)
        self._held: list[_Pending] = []  # staged, waiting for acks (_hold)
        self._hand_off_call = None
        self._in_flight = 0  # pendings handed to the writer whose Deferreds have not fired
        self._pending: list[_Pending] = []  # handed to the writer, not yet taken (under _cond)
        self._handoffs = 0  # how many hand-offs _pending holds (under _cond)
        self._cond = threading.Condition()
        self._thread = None
        self._stopping = False
        self._last_sync = time.monotonic()
        self._unsynced = False
        self.sync_in_apply = True  # read by backends that sync inside backend_apply (LevelDB)
        self._next_seq = 1
        self._stored_total = 0
        self.failure = None   # the error of the last failed write, until a write works again
        self._failures = 0
        self._failing = False  # writer thread's view of the same
        self._retry_at = 0.0
        self.batches = 0      # group commits done (for benchmarks and the admin API)
        self.batched_ops = 0  # operations they carried
        self.sync_seconds = Histogram(SYNC_SECONDS)   # how long each sync took
        self.batch_sizes = Histogram(BATCH_SIZES)     # operations per group commit

    # -- backend hooks (run in the writer thread, except open/close) -----------------------
    def backend_open(self) -> Catalogue:
        raise NotImplementedError

    def backend_apply(self, ops: list) -> None:
        """Apply [("add", key, id, data, seq, body_size) | ("remove", key, id, seq) |
        ("sub", key, info) | ("unsub", key) | ("queue", name) | ("drop", name) |
        ("producer", producer_id, [sequence, time] or None) | ("checkpoint",)] atomically.  `seq` orders the adds (it only grows); a remove
        carries its add's seq."""
        raise NotImplementedError

    def backend_sync(self) -> None:
        raise NotImplementedError

    def backend_read(self, key: str, message_id: str, seq: int) -> bytes:
        """The encoded message (may run in a pool thread, concurrently with the writer)."""
        raise NotImplementedError

    def backend_read_many(self, key: str, wanted: list[tuple[str, int]]) -> list:
        """The encoded messages [(message id, seq)] in that order (bytes-like), as
        backend_read; a backend that can read neighbours in one go says so here."""
        return [self.backend_read(key, message_id, seq) for message_id, seq in wanted]

    def backend_maintenance(self) -> None:
        """Periodic work in the writer thread between batches (checkpoints, GC)."""

    def backend_close(self) -> None:
        raise NotImplementedError

    def size(self):
        return 0

    # -- IPersistenceAdapter ---------------------------------------------------------------
    def open(self):
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         self.backend_open).addCallback(self._opened)

    def _opened(self, catalogue: Catalogue):
        for key, entries in catalogue.messages.items():
            view = self._view(key)
            for message_id, seq, size in entries:
                view.entries[message_id] = seq << 32 | size
                view._bytes += size
                self._stored_total += size
        self._next_seq = catalogue.next_seq
        self._subscriptions = dict(catalogue.subscriptions)
        self._queues = set(catalogue.queues)
        self._producers = {k: tuple(v) for k, v in catalogue.producers.items()}
        self._thread = threading.Thread(target=self._writer, name="pybrokerd-store-writer",
                                        daemon=True)
        self._thread.start()

    def close(self):
        if self._marks_call is not None and self._marks_call.active():
            self._marks_call.cancel()
            self._flush_marks()
        self._marks_call = None
        if self._hand_off_call is not None:
            self._hand_off_call.cancel()
            self._hand_off_call = None
        if self._hold_call is not None:
            self._hold_call.cancel()
            self._hold_call = None
        self._hand_off(release=True)
        if self._thread is None:
            return defer.succeed(None)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        thread, self._thread = self._thread, None
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), thread.join)

    def abandon(self):
        """Stop writing at once, without a final flush: another broker owns the files now."""
        if self._marks_call is not None and self._marks_call.active():
            self._marks_call.cancel()
        self._marks_call = None
        if self._hand_off_call is not None:
            self._hand_off_call.cancel()
            self._hand_off_call = None
        if self._hold_call is not None:
            self._hold_call.cancel()
            self._hold_call = None
        self._staged = []
        self._held = []
        with self._cond:
            self._pending = []
            self._handoffs = 0
            self._abandoned = True
            self._stopping = True
            self._cond.notify()

    _abandoned = False

    def _view(self, key: str) -> StoreView:
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = StoreView(self, key)
        return view

    def queue_store(self, name):
        if name not in self._queues:
            self._queues.add(name)
            self._submit([("queue", name)])
        return self._view("queue:" + name)

    def subscription_store(self, client_id, subscription_name):
        return self._view("sub:%s:%s" % (client_id, subscription_name))

    def add_subscription(self, info):
        key = "sub:%s:%s" % (info["client_id"], info["name"])
        self._subscriptions[key] = dict(info)
        return self._submit([("sub", key, dict(info))])

    def delete_subscription(self, client_id, subscription_name):
        key = "sub:%s:%s" % (client_id, subscription_name)
        self._subscriptions.pop(key, None)
        self._drop_view(key)
        return self._submit([("unsub", key)])

    def subscriptions(self):
        return list(self._subscriptions.values())

    def destinations(self):
        return sorted(self._queues)

    def remove_destination(self, name):
        self._queues.discard(name)
        self._drop_view("queue:" + name)
        return self._submit([("drop", name)])

    def _drop_view(self, key):
        view = self._views.pop(key, None)
        if view is not None:
            self._stored_total -= view._bytes

    def stored_bytes(self):
        """Body bytes of the messages held (what --store-limit bounds)."""
        return self._stored_total

    def producers(self):
        return dict(self._producers)

    # -- delivery marks: batched, and mostly cancelled by the ack that follows --------------
    mark_delay = 0.2  # seconds a delivery mark waits for its message's ack

    def _mark_delivered(self, view, message):
        self._marks[(view.name, message.message_id)] = (view, message)
        if self._marks_call is None:
            self._marks_call = self.reactor.callLater(self.mark_delay, self._flush_marks)

    def _flush_marks(self):
        self._marks_call = None
        marks, self._marks = self._marks, {}
        ops = []
        for view, message in marks.values():
            if self._views.get(view.name) is view:
                op = view._rewrite_op(message.copy(redelivery_count=max(message.redelivery_count, 1)))
                if op is not None:
                    ops.append(op)
        if ops:
            self._submit(ops, durable=False)

    def transaction(self, operations, durable=True):
        ops = []
        for op, view, arg in operations:
            if op == "producer":
                producer_id, sequence = arg
                if sequence is None:
                    if self._producers.pop(producer_id, None) is not None:
                        ops.append(("producer", producer_id, None))
                else:
                    value = self._producers[producer_id] = (sequence, int(time.time()))
                    ops.append(("producer", producer_id, list(value)))
            elif op == "add":
                if arg.message_id in view.entries:
                    continue  # already stored (a duplicate add is a no-op)
                entry = Unwritten(arg, self._next_seq)
                self._next_seq += 1
                view.entries[arg.message_id] = entry
                view._bytes += len(arg.body)
                self._stored_total += len(arg.body)
                ops.append(("add", view, entry))
            else:
                if self._marks:
                    self._marks.pop((view.name, arg), None)
                entry = view.entries.pop(arg, None)
                if entry is None:
                    continue
                self._consumed += 1  # (see _count_acks)
                if not self._consumed % self.ack_block:
                    self._count_acks()
                size = (len(entry.message.body) if isinstance(entry, Unwritten)
                        else entry & 0xFFFFFFFF)
                view._bytes -= size
                self._stored_total -= size
                ops.append(("remove", view, arg, entry))
        return self._submit(ops, durable)

    def checkpoint(self):
        return self._submit([("checkpoint",)])

    # -- the writer ------------------------------------------------------------------------
    def _submit(self, ops, durable=True):
        if not ops:
            return defer.succeed(None)
        d = defer.Deferred()
        self._staged.append(_Pending(ops, d, durable))
        if self._hand_off_call is None:
            self._hand_off_call = self.reactor.callLater(0, self._hand_off)
        return d

    # -- waiting for acks -----------------------------------------------------------------
    ack_wait = 0.005  # seconds a write may wait for the acks of messages in flight (0: never)
    wait_per_add = 0.0002  # and no longer than this for each add it may save
    fast_acks = 1000  # messages consumed per second from which waiting pays
    ack_block = 64  # that rate is measured over so many
    rate_stale = 0.1  # seconds a rate measured stays good
    hold_backoff = 1.0  # seconds of writing at once after waits that saved little
    _hold_call = None
    _hold_started = 0.0
    _hold_adds = 0  # adds held back during the current wait
    _judged_adds = 0  # adds held by the last waits
    _judged_written = 0  # of those, written all the same
    _hold_off_until = 0.0
    _consumed = 0  # messages consumed (removed from the store)
    _block_started = 0.0  # when the last ack_block of them began
    _fast_until = 0.0  # consumers take messages fast (the last block was quick) until then

    def _count_acks(self):
        """Another ack_block messages consumed: was that at a rate where the writes saved by
        waiting for acks matter?  (Below it they do not, and what is written at once is the
        sooner safe from a crash of the broker.)  The answer holds for rate_stale seconds."""
        now = self.reactor.seconds()
        quick = now - self._block_started <= self.ack_block / self.fast_acks
        self._fast_until = now + self.rate_stale if quick else 0.0
        self._block_started = now

    def _hold(self, staged: list[_Pending], fresh: int) -> list[_Pending]:
        """Reactor thread: of `staged` (in order, cancelled pairs dropped; those from index
        `fresh` on are new this turn), what may go to the writer now.  The rest, from the
        first pending with an add of a message already delivered to a consumer that acks it
        (client, client-individual), waits in self._held until those acks have come, when
        each add is dropped with its remove and nothing is written, or until the wait is
        over (_wait_over).  While consumers ack fast, most acks come within a few ms: a
        persistent message consumed then costs no write, and the RECEIPT of its SEND no
        sync."""
        marks = self._marks
        for n, pending in enumerate(staged):
            for op in pending.ops:
                if op[0] == "add" and (op[1].name, op[2].message.message_id) in marks:
                    break
            else:
                continue
            if self._hold_call is not None:  # a wait going on: new adds join it
                self._hold_adds += sum(op[0] == "add" for p in staged[max(n, fresh):]
                                       for op in p.ops)
            else:
                now = self.reactor.seconds()
                if now >= self._fast_until or now < self._hold_off_until:
                    return staged  # acks are few, or waits saved little lately
                self._hold_started = now
                self._hold_adds = sum(op[0] == "add" for p in staged[n:] for op in p.ops)
                self._hold_call = self.reactor.callLater(self._wait_over() - now,
                                                         self._hold_expired)
            self._held = staged[n:]
            return staged[:n]
        if self._hold_call is not None:  # every add held was acked: nothing to wait for
            self._end_hold(())
        return staged

    def _wait_over(self) -> float:
        """When the current wait ends: ack_wait after it began at the latest, sooner when it
        holds few adds, so that a producer waiting for the RECEIPT of one message waits
        little longer than a sync would take."""
        return self._hold_started + min(self.ack_wait, self.wait_per_add * self._hold_adds)

    def _hold_expired(self):
        self._hold_call = None
        left = self._wait_over() - self.reactor.seconds()
        if left > 0:  # adds held since it began make it longer
            self._hold_call = self.reactor.callLater(left, self._hold_expired)
            return
        self._end_hold(self._held)
        self._hand_off(release=True)

    def _end_hold(self, held: list[_Pending]):
        """The wait for acks is over, with `held` still held.  When of the last ack_block
        adds or more that waits held most were written all the same, acks are slow now: no
        waiting for a while."""
        if self._hold_call is not None:
            self._hold_call.cancel()
            self._hold_call = None
        self._judged_adds += self._hold_adds
        self._judged_written += sum(op[0] == "add" for p in held for op in p.ops)
        if self._judged_adds >= self.ack_block:
            if self._judged_written * 2 > self._judged_adds:
                self._hold_off_until = self.reactor.seconds() + self.hold_backoff
            self._judged_adds = self._judged_written = 0

    def _hand_off(self, release: bool = False):
        """Reactor thread, once per turn of the reactor: give the writer what was submitted
        during the turn (and what waited for acks, see _hold).  An add removed in the same
        turn (a message an auto-ack consumer took at once) is dropped here with its remove;
        an action left with nothing to write is done at once, without a trip through the
        writer thread, when nothing handed over before it is still unanswered and nothing
        written lazily waits on a sync that it would owe."""
        self._hand_off_call = None
        staged, self._staged = self._staged, []
        fresh = len(self._held)
        if fresh:
            staged = self._held + staged
            self._held = []
        if not staged:
            return
        _drop_cancelled(staged)
        if self._marks and self.ack_wait and not release and self.failure is None:
            staged = self._hold(staged, fresh)
            if not staged:
                return
        elif self._hold_call is not None:  # (every delivery mark was written, say)
            self._end_hold(staged[:fresh])
        ready = 0
        if not self._in_flight and self.failure is None \
                and (self.sync_policy != "always" or not self._unsynced):
            while ready < len(staged) and not staged[ready].ops:
                ready += 1
        if ready < len(staged):
            rest = staged[ready:] if ready else staged
            self._in_flight += len(rest)
            with self._cond:
                self._pending.extend(rest)
                self._handoffs += 1
                self._cond.notify()
        for pending in staged[:ready]:
            pending.answer()

    def _writer(self):
        self._make_reserve()
        while True:
            with self._cond:
                while not self._stopping:
                    if self._failing:
                        # after a failed write, try again at most once per retry interval
                        delay = self._retry_at - time.monotonic()
                        if delay <= 0:
                            break
                        self._cond.wait(delay)
                        continue
                    if self._pending:
                        break
                    if not self._cond.wait(self._idle_timeout()):
                        break
                batch, self._pending = self._pending, []
                handoffs, self._handoffs = self._handoffs, 0
                stopping = self._stopping and not batch
            if self._abandoned:
                return
            if self._failing and not stopping:
                self._probe()  # only a probe's success, not a small batch's, ends a failure
            if batch:
                self._write(batch, across=handoffs > 1)
            elif not self._failing:
                self._idle()
            if stopping:
                if self.batches:
                    log.info("store {dir}: {batches} group commits carried {ops} operations "
                             "({avg:.1f} per commit)", dir=self.directory, batches=self.batches,
                             ops=self.batched_ops, avg=self.batched_ops / self.batches)
                try:
                    if self._unsynced:
                        self.backend_sync()
                    self.backend_close()
                except Exception:
                    log.failure("closing the store")
                return

    def _idle_timeout(self):
        if self.sync_policy != "never" and self._unsynced:
            return self.periodic_sync_interval
        return self.maintenance_interval

    def _idle(self):
        try:
            if self._unsynced and self.sync_policy != "never":
                self.backend_sync()
                self._unsynced = False
        except Exception as e:
            self._write_failed([], e)  # what was written lazily may not be on disk
            return
        self._maintain()

    def _write(self, batch: list[_Pending], across: bool = True):
        ops = self._merge(batch, across)
        policy = self.sync_policy
        # under "always", a batch is synced before its Deferreds fire unless nobody in it
        # waits for durability (an auto-ack's remove, a send without receipt: ActiveMQ does
        # not sync those either); such writes reach the OS at once and are synced with the
        # next batch that needs it, or within periodic_sync_interval
        sync_now = (policy == "always" and (not self.lazy_sync or any(p.durable for p in batch))) \
            or (policy != "never"
                and time.monotonic() - self._last_sync >= self.periodic_sync_interval)
        self.sync_in_apply = sync_now
        try:
            if ops:
                self.backend_apply(ops)
                self.batches += 1
                self.batched_ops += len(ops)
                self.batch_sizes.observe(len(ops))
                self._unsynced = True
            if sync_now:
                if self._unsynced:
                    started = time.monotonic()
                    self.backend_sync()
                    self.sync_seconds.observe(time.monotonic() - started)
                    self._unsynced = False
                    self._last_sync = time.monotonic()
        except Exception as e:
            self._write_failed(batch, e)
            return
        self.backend_done()
        self.reactor.callFromThread(self._written, batch)
        self._maintain()

    def _maintain(self):
        try:
            self.backend_maintenance()
        except Exception:
            log.failure("store maintenance")
            try:
                self.backend_rollback()  # a compaction batch half done
            except Exception:
                log.failure("store maintenance: rolling back")

    def _merge(self, batch: list[_Pending], across: bool = True) -> list:
        """Backend operations for a batch, with adds cancelled by removes in the same batch
        (`across`: it holds more than one hand-off; within one, _hand_off did it already)."""
        if across:
            _drop_cancelled(batch)
        producers = {}
        ops = []
        for pending in batch:
            for op in pending.ops:
                kind = op[0]
                if kind in ("add", "rewrite"):
                    view, entry = op[1], op[2]
                    message = entry.message
                    # a rewrite is an add with the original seq: it overwrites in place
                    ops.append(("add", view.name, message.message_id,
                                serialization.encode(message), entry.seq, len(message.body)))
                elif kind == "remove":
                    view, message_id, entry = op[1], op[2], op[3]
                    seq = entry.seq if isinstance(entry, Unwritten) else entry >> 32
                    ops.append(("remove", view.name, message_id, seq))
                elif kind == "producer":
                    index = producers.get(op[1])
                    if index is not None:
                        ops[index] = None  # only the latest sequence of a producer matters
                    producers[op[1]] = len(ops)
                    ops.append(op)
                else:
                    ops.append(op)
        return [op for op in ops if op is not None]

    def _written(self, batch):
        self._in_flight -= len(batch)
        for pending in batch:
            for op in pending.ops:
                if op[0] in ("add", "rewrite"):
                    view, entry = op[1], op[2]
                    message_id = entry.message.message_id
                    if view.entries.get(message_id) is entry:
                        # the body is on disk now: drop our reference to it
                        view.entries[message_id] = entry.seq << 32 | len(entry.message.body)
        for pending in batch:
            pending.answer()

    # -- write failures (disk full, I/O errors) ---------------------------------------------
    retry_interval = 1.0  # seconds between attempts to write again after a failure
    probe_size = 64 * 1024  # bytes a recovery probe writes: room for more than a tiny record

    def _write_failed(self, batch, error):
        """Writer thread: put the backend back where it was before this batch, then let the
        reactor fail the batch's Deferreds and keep what must not be lost for the next try."""
        try:
            self.backend_rollback()
        except Exception:
            log.failure("store {dir}: rolling back a failed batch", dir=self.directory)
        self._failing = True
        self._retry_at = time.monotonic() + self.retry_interval
        self.reactor.callFromThread(self._fail, batch, error)

    reserve_size = 1024 * 1024  # a file given back when the disk is full (see _release_reserve)

    def _reserve_path(self):
        return os.path.join(self.directory, "reserve")

    def _make_reserve(self) -> bool:
        """Writer thread: keep `reserve_size` bytes of the disk in a file of our own, so that
        a full disk still leaves the store room to checkpoint and delete what is dead.
        -> False when there is no room for it."""
        path = self._reserve_path()
        try:
            if os.path.getsize(path) >= self.reserve_size:
                return True
        except OSError:
            pass
        try:
            with open(path, "wb") as f:
                f.write(b"\0" * self.reserve_size)
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            try:
                os.unlink(path)
            except OSError:
                pass
            return False

    def _release_reserve(self) -> bool:
        try:
            os.unlink(self._reserve_path())
            return True
        except OSError:
            return False

    def _probe(self):
        """Writer thread, while failing: free what can be freed, then see whether there is
        room for the reserve and a probe write again.  Needing the reserve back before
        saying "recovered" keeps a nearly full disk from flapping between the two states."""
        if self._release_reserve():
            log.warn("store {dir}: released its reserve file ({size} bytes) to make room",
                     dir=self.directory, size=self.reserve_size)
        try:
            self.backend_reclaim()
            if not self._make_reserve():
                raise OSError(errno.ENOSPC, "no room for the %d-byte reserve file"
                              % self.reserve_size)
            self.backend_probe()
            self.backend_done()
        except Exception as e:
            try:
                self.backend_rollback()
            except Exception:
                pass
            self._retry_at = time.monotonic() + self.retry_interval
            self.reactor.callFromThread(self._still_failing, e)
            return
        self._failing = False
        self.reactor.callFromThread(self._recovered)

    def _fail(self, batch, error):
        """Reactor thread.  The batch was not written, and each broker action in it fails as
        a whole (a send and the remove of a dead-lettered original, a COMMIT's sends and
        acks): its adds are forgotten (their senders get an error, the broker takes the
        messages back from memory) and its removes are undone in the catalogue, so those
        messages are still the store's and come back, as after a crash: at least once,
        never lost."""
        self._in_flight -= len(batch)
        first = self.failure is None
        self.failure = error
        self._failures += 1
        if first or self._failures % 100 == 0:
            log.critical("store {dir} cannot write ({error}): persistent messages are refused "
                         "until it can; retrying every {interval:g} s", dir=self.directory,
                         error=describe_error(error), interval=self.retry_interval)
        failed_adds = set()
        for pending in batch:
            for op in pending.ops:
                if op[0] == "add":
                    view, entry = op[1], op[2]
                    message = entry.message
                    failed_adds.add(id(entry))
                    if view.entries.get(message.message_id) is entry:
                        del view.entries[message.message_id]
                        self._count_bytes(view, -len(message.body))
        for pending in batch:
            for op in pending.ops:
                if op[0] == "remove":
                    view, message_id, entry = op[1], op[2], op[3]
                    if id(entry) in failed_adds or message_id in view.entries:
                        continue
                    view.entries[message_id] = entry
                    self._count_bytes(view, len(entry.message.body) if isinstance(entry, Unwritten)
                                      else entry & 0xFFFFFFFF)
        failure = StoreWriteError(error, self.directory)
        for pending in batch:
            pending.answer(failure)

    def _count_bytes(self, view, delta):
        view._bytes += delta
        if self._views.get(view.name) is view:  # a dropped view no longer counts
            self._stored_total += delta

    def _still_failing(self, error):
        self.failure = error
        self._failures += 1
        if self._failures % 30 == 0:
            log.critical("store {dir} still cannot write ({error})", dir=self.directory,
                         error=describe_error(error))

    def _recovered(self):
        if self.failure is not None:
            log.warn("store {dir} writes again after {error}: persistent messages are accepted "
                     "again", dir=self.directory, error=describe_error(self.failure))
        self.failure = None
        self._failures = 0

    def backend_done(self) -> None:
        """Writer thread: the last batch was written (and synced if it had to be); it can no
        longer be rolled back."""

    def backend_reclaim(self) -> None:
        """Writer thread, while failing, before each probe: free what can be freed without
        writing much (dead journal segments)."""

    def backend_rollback(self) -> None:
        """Writer thread, after a failed apply or sync: make the backend as it was before the
        batch (a store whose batches are atomic by themselves has nothing to do)."""

    def backend_probe(self) -> None:
        """Writer thread, while failing: raise unless a write of probe_size bytes and a sync
        work now.  It writes a producer record and removes it again."""
        self.backend_apply([("producer", PROBE_ID, [0, "x" * self.probe_size]),
                            ("producer", PROBE_ID, None)])
        self.backend_sync()

    # -- reading ---------------------------------------------------------------------------
    def _read_many(self, key, wanted):
        """Messages for [(id, entry)], reading written ones in a thread."""
        to_read = [(i, message_id, entry >> 32) for i, (message_id, entry) in enumerate(wanted)
                   if not isinstance(entry, Unwritten)]

        def read():
            found = {}
            raw = self.backend_read_many(key, [(message_id, seq) for _, message_id, seq in to_read])
            for (i, message_id, seq), data in zip(to_read, raw):
                message = found[i] = serialization.decode(data)
                # the same string as the catalogue's key, not a copy per read (a million
                # scheduled jobs read back on start keep one id string each, not two)
                message.message_id = message_id
            return found

        def merge(read_back):
            return [read_back[i] if i in read_back else entry.message
                    for i, (_, entry) in enumerate(wanted)]
        if not to_read:
            return defer.succeed(merge({}))
        return threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), read).addCallback(merge)
