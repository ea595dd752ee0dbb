"""The LMDB store ("lmdb"): one LMDB environment, one write transaction per group commit.

**LMDB must not live on NFS or any other network file system** (CIFS/SMB, ...).  It relies on
a memory map kept coherent with the file and on a lock file in shared memory; neither holds
across machines, and its author calls remote file systems "explicitly not supportable".  Put
``--dir`` on a local disk.  ``backend_open`` logs a warning when the directory is on NFS.

The environment lives in the store directory (``data.mdb``, ``lock.mdb``), with named
databases:

* ``messages``: ``key (UTF-8) | 0x00 | u64 seq (big-endian)`` -> ``u32 id length |
  u32 body size | id | data``.  Store keys contain no NUL, so a range scan over ``key | 0x00``
  returns one store's messages in arrival order, and open() rebuilds the catalogue from keys
  and value heads alone.
* ``subs``: store key -> subscription info as JSON.
* ``queues``: queue name -> empty.
* ``meta``: ``version``, and ``hwm``: the highest add sequence ever stored (u64), so sequences
  never go backwards, even after every message has been removed.
* ``names``: LMDB keys are at most 511 bytes.  A store key or queue name too long for that is
  keyed by ``0xFF | sha256(role | text)`` instead (0xFF never occurs in UTF-8, so no collision
  with a real name), and ``names`` maps that digest back to the text.

Durability (one atomic transaction per batch in every case):

* ``always``: the environment is opened with LMDB's default ``sync=True, metasync=True``, so a
  commit returns only once it is durable and ``backend_sync`` has nothing left to do.  That
  costs two device flushes per batch (fdatasync of the data pages, then an O_DSYNC write of the
  meta page), deliberately: a single flush cannot be both safe and durable in LMDB.
  ``sync=False`` followed by ``env.sync()`` flushes data and meta pages together in no
  particular order, so a power cut during that flush can leave a meta page pointing at pages
  that never reached the disk (a corrupt database, not merely a lost batch); ``metasync=False``
  leaves the meta page of the batch just acknowledged unflushed until the next commit (an
  acknowledged batch lost).  Group commit amortises the second flush over the whole batch.
* ``periodic`` / ``never``: opened with ``sync=False`` (MDB_NOSYNC); ``backend_sync`` calls
  ``env.sync(True)`` (once a second, or only at close).  A broker crash loses nothing (the
  writes are in the OS page cache); an OS crash or power cut loses the unsynced batches and,
  on a file system that reorders writes, may damage the database: the price of not syncing.

The map is reserved large (64 GiB on 64-bit: address space only; the file grows as pages are
used) and doubled on ``MapFullError``.  Pages freed by removes are reused, but the file never
shrinks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys
import time

import lmdb
from twisted.logger import Logger

from stores.batching import BatchingAdapter, Catalogue
from stores.guard import ReadGuard

log = Logger()

FORMAT_VERSION = b"1"
SEQ = struct.Struct(">Q")
VALUE_HEAD = struct.Struct(">II")  # message id length, body size
LONG_KEY = b"\xff"
ROLE_MESSAGES, ROLE_QUEUE = b"m", b"q"
DEFAULT_MAP_SIZE = (64 << 30) if sys.maxsize > 2 ** 32 else (1 << 30)
NETWORK_FS = ("nfs", "cifs", "smb")


class LmdbAdapter(BatchingAdapter):
    """A persistent store in one LMDB environment."""

    lazy_sync = False  # see "Durability" above: every commit under "always" is a synced one

    def __init__(self, directory, **options):
        self._map_size = options.pop("map_size", DEFAULT_MAP_SIZE)
        super().__init__(directory, **options)
        self._env = None
        self._guard = ReadGuard()  # pool-thread reads vs. set_mapsize() and close()
        self._hwm = 0
        self._key_limit = 0  # longest store key or queue name kept as itself (bytes)
        self._db_messages = self._db_subs = self._db_queues = self._db_meta = None
        self._db_names = None

    # -- open ------------------------------------------------------------------------------
    def backend_open(self) -> Catalogue:
        os.makedirs(self.directory, exist_ok=True)
        fstype = network_fs_type(self.directory)
        if fstype is not None:
            log.warn("lmdb {dir} is on a network file system ({fstype}): LMDB does not support "
                     "NFS or other remote file systems and the store may be corrupted; use a "
                     "local disk", dir=self.directory, fstype=fstype)
        started = time.monotonic()
        durable_commits = self.sync_policy == "always"
        try:
            env = self._open_env(self._map_size, durable_commits)
        except lmdb.MemoryError:
            # no room for a 64 GiB reservation (ulimit -v, 32-bit userland): start small, grow
            env = self._open_env(1 << 30, durable_commits)
        try:
            self._map_size = env.info()["map_size"]
            self._key_limit = env.max_key_size() - 9  # room for b"\x00" + u64 seq
            self._db_messages = env.open_db(b"messages")
            self._db_subs = env.open_db(b"subs")
            self._db_queues = env.open_db(b"queues")
            self._db_meta = env.open_db(b"meta")
            self._db_names = env.open_db(b"names")
            self._db_producers = env.open_db(b"producers")
            with env.begin(write=True) as txn:
                version = txn.get(b"version", db=self._db_meta)
                if version is None:
                    txn.put(b"version", FORMAT_VERSION, db=self._db_meta)
                elif version != FORMAT_VERSION:
                    raise ValueError("lmdb store %s has format version %r, expected %r"
                                     % (self.directory, version, FORMAT_VERSION))

            catalogue = Catalogue()
            count = 0
            with env.begin(buffers=True) as txn:
                names = {bytes(k): bytes(v) for k, v in txn.cursor(db=self._db_names)}
                hwm = txn.get(b"hwm", db=self._db_meta)
                top = SEQ.unpack(hwm)[0] if hwm is not None else 0
                prefix, entries = None, None
                for k, v in txn.cursor(db=self._db_messages):
                    stored = bytes(k[:-9])
                    if stored != prefix:
                        prefix = stored
                        entries = catalogue.messages[_unname(stored, names)]
                    (seq,) = SEQ.unpack(k[-8:])
                    id_length, body_size = VALUE_HEAD.unpack(v[:VALUE_HEAD.size])
                    message_id = _text(v[VALUE_HEAD.size:VALUE_HEAD.size + id_length])
                    entries.append((message_id, seq, body_size))
                    if seq > top:
                        top = seq
                    count += 1
                for k, v in txn.cursor(db=self._db_subs):
                    catalogue.subscriptions[_unname(bytes(k), names)] = json.loads(bytes(v))
                for k, v in txn.cursor(db=self._db_producers):
                    catalogue.producers[_text(bytes(k))] = json.loads(bytes(v))
                for k in txn.cursor(db=self._db_queues).iternext(values=False):
                    catalogue.queues.add(_unname(bytes(k), names))
        except BaseException:
            env.close()
            raise
        self._env = env
        self._hwm = top
        catalogue.next_seq = top + 1
        log.info("lmdb {dir}: recovered {messages} messages in {seconds:.2f}s",
                 dir=self.directory, messages=count, seconds=time.monotonic() - started)
        return catalogue

    def _open_env(self, map_size, durable_commits):
        return lmdb.open(self.directory, subdir=True, map_size=map_size, max_dbs=8,
                         sync=durable_commits, metasync=durable_commits, lock=True)

    # -- writing ---------------------------------------------------------------------------
    def backend_apply(self, ops):
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    hwm = self._apply(txn, ops)
            except lmdb.MapFullError:
                self._grow()
                continue
            self._hwm = hwm
            return

    def _apply(self, txn, ops) -> int:
        messages = self._db_messages
        hwm = self._hwm
        for op in ops:
            kind = op[0]
            if kind == "add":
                _, key, message_id, data, seq, body_size = op
                k = self._stored(txn, ROLE_MESSAGES, key, register=True) + b"\x00" + SEQ.pack(seq)
                raw_id = message_id.encode("utf-8", "surrogatepass")
                value = b"".join((VALUE_HEAD.pack(len(raw_id), body_size), raw_id, data))
                # append keeps pages full (sequence keys only grow within a store); it returns
                # False when the key is not the highest in the database
                if not txn.put(k, value, append=True, db=messages):
                    txn.put(k, value, db=messages)
                if seq > hwm:
                    hwm = seq
            elif kind == "remove":
                k = self._stored(txn, ROLE_MESSAGES, op[1]) + b"\x00" + SEQ.pack(op[3])
                txn.delete(k, db=messages)
            elif kind == "sub":
                k = self._stored(txn, ROLE_MESSAGES, op[1], register=True)
                txn.put(k, json.dumps(op[2]).encode(), db=self._db_subs)
            elif kind == "unsub":
                k = self._stored(txn, ROLE_MESSAGES, op[1])
                txn.delete(k, db=self._db_subs)
                self._delete_messages(txn, k)
                self._forget(txn, k)
            elif kind == "producer":
                k = op[1].encode("utf-8", "surrogatepass")[:self._key_limit]
                if op[2] is None:
                    txn.delete(k, db=self._db_producers)
                else:
                    txn.put(k, json.dumps(op[2]).encode(), db=self._db_producers)
            elif kind == "queue":
                k = self._stored(txn, ROLE_QUEUE, op[1], register=True)
                txn.put(k, b"", db=self._db_queues)
            elif kind == "drop":
                k = self._stored(txn, ROLE_QUEUE, op[1])
                txn.delete(k, db=self._db_queues)
                self._forget(txn, k)
                k = self._stored(txn, ROLE_MESSAGES, "queue:" + op[1])
                self._delete_messages(txn, k)
                self._forget(txn, k)
            elif kind == "checkpoint":
                pass  # every commit is already a consistent recovery point
            else:
                raise ValueError("unknown store operation %r" % (kind,))
        if hwm != self._hwm:
            txn.put(b"hwm", SEQ.pack(hwm), db=self._db_meta)
        return hwm

    def _lmdb_key(self, role, text) -> bytes:
        """The LMDB key for a store key or queue name."""
        raw = text.encode("utf-8", "surrogatepass")
        if len(raw) <= self._key_limit:
            return raw
        return LONG_KEY + hashlib.sha256(role + raw).digest()

    def _stored(self, txn, role, text, register=False) -> bytes:
        """_lmdb_key(), recording the text of a long one in `names` when it is written."""
        k = self._lmdb_key(role, text)
        if register and k.startswith(LONG_KEY):
            txn.put(k, text.encode("utf-8", "surrogatepass"), db=self._db_names)
        return k

    def _forget(self, txn, stored):
        if stored.startswith(LONG_KEY):
            txn.delete(stored, db=self._db_names)

    def _delete_messages(self, txn, stored):
        prefix = stored + b"\x00"
        cursor = txn.cursor(db=self._db_messages)
        if cursor.set_range(prefix):
            while cursor.key().startswith(prefix):
                if not cursor.delete():  # moves to the next record; b"" key past the end
                    break

    def _grow(self):
        new_size = self._map_size * 2
        with self._guard.exclusive():  # no read transaction may be live while the map moves
            self._env.set_mapsize(new_size)
        self._map_size = new_size
        log.info("lmdb {dir}: map full, grown to {size} bytes", dir=self.directory, size=new_size)

    def backend_probe(self):
        # committed, then deleted in a second commit: LMDB never writes pages that are freed
        # within the transaction that dirtied them
        with self._env.begin(write=True) as txn:
            txn.put(b"probe", b"p" * self.probe_size, db=self._db_meta)
        self.backend_sync()
        with self._env.begin(write=True) as txn:
            txn.delete(b"probe", db=self._db_meta)
        self.backend_sync()

    def backend_sync(self):
        if self.sync_policy != "always":  # under "always" every commit is already durable
            self._env.sync(True)

    # -- reading ---------------------------------------------------------------------------
    def backend_read(self, key, message_id, seq):
        with self._guard.shared():
            env = self._env
            if env is None:
                raise RuntimeError("the lmdb store is closed")
            with env.begin(db=self._db_messages, buffers=True) as txn:
                k = self._lmdb_key(ROLE_MESSAGES, key) + b"\x00" + SEQ.pack(seq)
                value = txn.get(k)
                if value is None:
                    raise KeyError((key, message_id))
                id_length = VALUE_HEAD.unpack(value[:VALUE_HEAD.size])[0]
                return bytes(value[VALUE_HEAD.size + id_length:])

    # -- the rest --------------------------------------------------------------------------
    def size(self):
        return _directory_size(self.directory)

    def backend_close(self):
        with self._guard.exclusive():
            env, self._env = self._env, None
            if env is not None:
                env.close()


def _text(raw) -> str:
    return str(raw, "utf-8", "surrogatepass")


def _unname(stored: bytes, names: dict) -> str:
    if stored.startswith(LONG_KEY):
        return _text(names[stored])
    return _text(stored)


def _directory_size(directory) -> int:
    total = 0
    try:
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    if entry.is_file():
                        total += entry.stat().st_size
                except OSError:
                    pass
    except OSError:
        pass
    return total


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def network_fs_type(path, mounts="/proc/mounts"):
    """The file system type of `path` if it is a network one (nfs, nfs4, cifs, ...), else None."""
    real = os.path.realpath(path)
    best, fstype = None, None
    try:
        with open(mounts, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[1])
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                # the longest mount point wins; among equals the later line (mounted on top)
                if inside and (best is None or len(point) >= len(best)):
                    best, fstype = point, fields[2]
    except OSError:
        return None
    if fstype is not None and fstype.startswith(NETWORK_FS):
        return fstype
    return None
