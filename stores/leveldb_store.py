"""The LevelDB store ("leveldb"): one LevelDB database (plyvel), one WriteBatch per group commit.

The database lives in the store directory.  Record kinds are told apart by a key prefix that
no store key can produce a collision with (the prefixes end in ":" and are fixed):

* ``m:`` + ``key (UTF-8) | 0x00 | u64 seq (big-endian)`` -> ``u32 id length | u32 body size |
  id | data``.  Store keys contain no NUL, so a prefix scan over ``m:key | 0x00`` returns one
  store's messages in arrival order, and open() rebuilds the catalogue from a single scan.
* ``s:`` + store key -> subscription info as JSON.
* ``q:`` + queue name -> empty.
* ``meta:version``, and ``meta:hwm``: the highest add sequence ever stored (u64), so sequences
  never go backwards, even after every message has been removed.

Durability: a batch is one ``WriteBatch``, appended to LevelDB's write-ahead log atomically.
Under ``always`` it is written with ``sync=True``: one fdatasync of the log per batch, done
before the batch's Deferreds fire, so ``backend_sync`` has nothing left to do.  Under
``periodic`` and ``never`` batches are written unsynced (they reach the OS at once, so a broker
crash loses nothing) and ``backend_sync`` makes them durable with one synced write.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import time

import plyvel
from twisted.logger import Logger

from stores.batching import BatchingAdapter, Catalogue
from stores.guard import ReadGuard

log = Logger()

FORMAT_VERSION = b"1"
SEQ = struct.Struct(">Q")
VALUE_HEAD = struct.Struct(">II")  # message id length, body size
MESSAGE, SUBSCRIPTION, QUEUE, PRODUCER = b"m:", b"s:", b"q:", b"p:"
META_VERSION, META_HWM = b"meta:version", b"meta:hwm"
# plyvel.DB keyword arguments a caller may pass through (e.g. write_buffer_size=16 << 20)
DB_OPTIONS = ("write_buffer_size", "max_open_files", "lru_cache_size", "block_size",
              "compression", "bloom_filter_bits", "paranoid_checks")


class LevelDbAdapter(BatchingAdapter):
    """A persistent store in one LevelDB database."""

    def __init__(self, directory, **options):
        self._db_options = {name: options.pop(name) for name in DB_OPTIONS if name in options}
        super().__init__(directory, **options)
        self._db = None
        self._guard = ReadGuard()  # pool-thread reads vs. close()
        self._hwm = 0
        self._synced = True

    # -- open ------------------------------------------------------------------------------
    def backend_open(self) -> Catalogue:
        os.makedirs(self.directory, exist_ok=True)
        started = time.monotonic()
        db = plyvel.DB(self.directory, create_if_missing=True, **self._db_options)
        try:
            version = db.get(META_VERSION)
            if version is None:
                db.put(META_VERSION, FORMAT_VERSION, sync=True)
            elif version != FORMAT_VERSION:
                raise ValueError("leveldb store %s has format version %r, expected %r"
                                 % (self.directory, version, FORMAT_VERSION))
            catalogue = Catalogue()
            hwm = db.get(META_HWM)
            top = SEQ.unpack(hwm)[0] if hwm is not None else 0
            count = 0
            prefix, entries = None, None
            with db.snapshot() as snapshot:
                for k, v in snapshot.iterator(prefix=MESSAGE):
                    stored = k[len(MESSAGE):-9]
                    if stored != prefix:
                        prefix = stored
                        entries = catalogue.messages[_text(stored)]
                    (seq,) = SEQ.unpack_from(k, len(k) - 8)
                    id_length, body_size = VALUE_HEAD.unpack_from(v)
                    message_id = _text(v[VALUE_HEAD.size:VALUE_HEAD.size + id_length])
                    entries.append((message_id, seq, body_size))
                    if seq > top:
                        top = seq
                    count += 1
                for k, v in snapshot.iterator(prefix=SUBSCRIPTION):
                    catalogue.subscriptions[_text(k[len(SUBSCRIPTION):])] = json.loads(v)
                for k, v in snapshot.iterator(prefix=PRODUCER):
                    catalogue.producers[_text(k[len(PRODUCER):])] = json.loads(v)
                for k in snapshot.iterator(prefix=QUEUE, include_value=False):
                    catalogue.queues.add(_text(k[len(QUEUE):]))
        except BaseException:
            db.close()
            raise
        self._db = db
        self._hwm = top
        catalogue.next_seq = top + 1
        log.info("leveldb {dir}: recovered {messages} messages in {seconds:.2f}s",
                 dir=self.directory, messages=count, seconds=time.monotonic() - started)
        return catalogue

    # -- writing ---------------------------------------------------------------------------
    def backend_apply(self, ops):
        db = self._db
        if db is None:
            raise OSError(errno.EIO, "the leveldb database could not be reopened after a "
                                     "write error")
        synced = self.sync_policy == "always" and self.sync_in_apply
        batch = db.write_batch(sync=synced)
        hwm = self._hwm
        put_here: dict[str, list[bytes]] = {}  # store key -> message keys put in this batch
        for op in ops:
            kind = op[0]
            if kind == "add":
                _, key, message_id, data, seq, body_size = op
                k = _message_prefix(key) + SEQ.pack(seq)
                raw_id = _raw(message_id)
                batch.put(k, b"".join((VALUE_HEAD.pack(len(raw_id), body_size), raw_id, data)))
                put_here.setdefault(key, []).append(k)
                if seq > hwm:
                    hwm = seq
            elif kind == "remove":
                batch.delete(_message_prefix(op[1]) + SEQ.pack(op[3]))
            elif kind == "sub":
                batch.put(SUBSCRIPTION + _raw(op[1]), json.dumps(op[2]).encode())
            elif kind == "unsub":
                batch.delete(SUBSCRIPTION + _raw(op[1]))
                self._delete_messages(batch, op[1], put_here)
            elif kind == "producer":
                if op[2] is None:
                    batch.delete(PRODUCER + _raw(op[1]))
                else:
                    batch.put(PRODUCER + _raw(op[1]), json.dumps(op[2]).encode())
            elif kind == "queue":
                batch.put(QUEUE + _raw(op[1]), b"")
            elif kind == "drop":
                batch.delete(QUEUE + _raw(op[1]))
                self._delete_messages(batch, "queue:" + op[1], put_here)
            elif kind == "checkpoint":
                pass  # the log is replayed by LevelDB itself; nothing to do
            else:
                raise ValueError("unknown store operation %r" % (kind,))
        if hwm != self._hwm:
            batch.put(META_HWM, SEQ.pack(hwm))
        batch.write()
        self._hwm = hwm
        self._synced = synced

    def _delete_messages(self, batch, key, put_here):
        # what is in the database, plus what this batch put before (the scan cannot see it)
        for k in self._db.iterator(prefix=_message_prefix(key), include_value=False):
            batch.delete(k)
        for k in put_here.pop(key, ()):
            batch.delete(k)

    def backend_rollback(self):
        """LevelDB appends a batch to its log; a failed append leaves a torn record that new
        records would follow, and on the next open its log reader drops whatever shares a
        block with the tear, acknowledged writes included.  So after a failure the database
        is closed and opened again: recovery cuts the tear and a fresh log starts."""
        with self._guard.exclusive():
            db, self._db = self._db, None
            if db is not None:
                db.close()
        self._db = plyvel.DB(self.directory, **self._db_options)  # may fail: probed again
        self._synced = True

    def backend_probe(self):
        if self._db is None:
            self.backend_rollback()
        super().backend_probe()

    def backend_sync(self):
        if not self._synced:  # a batch written synced needs nothing more
            self._db.put(META_HWM, SEQ.pack(self._hwm), sync=True)
            self._synced = True

    # -- reading ---------------------------------------------------------------------------
    def backend_read(self, key, message_id, seq):
        with self._guard.shared():
            db = self._db
            if db is None:
                raise RuntimeError("the leveldb store is closed")
            value = db.get(_message_prefix(key) + SEQ.pack(seq))
        if value is None:
            raise KeyError((key, message_id))
        id_length = VALUE_HEAD.unpack_from(value)[0]
        return value[VALUE_HEAD.size + id_length:]

    # -- the rest --------------------------------------------------------------------------
    def size(self):
        total = 0
        try:
            with os.scandir(self.directory) as it:
                for entry in it:
                    try:
                        if entry.is_file():
                            total += entry.stat().st_size
                    except OSError:
                        pass  # a table file deleted by a compaction meanwhile
        except OSError:
            pass
        return total

    def backend_close(self):
        with self._guard.exclusive():  # plyvel must not close under a concurrent get()
            db, self._db = self._db, None
            if db is not None:
                db.close()


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _text(raw) -> str:
    return str(raw, "utf-8", "surrogatepass")


def _message_prefix(key: str) -> bytes:
    return MESSAGE + _raw(key) + b"\x00"
