"""Who is master: the broker that holds the lock on the shared persistence directory.

Two lockers, both polling from the reactor (never a thread blocked in the kernel, so a slave
stops at once on SIGTERM; ActiveMQ once deadlocked there, AMQ-6601):

* ``FileLocker`` (default): a POSIX ``fcntl`` record lock on ``<dir>/lock``.  POSIX locks work
  on local disks, SANs and NFSv4 (where flock may be emulated or local-only); they belong to
  the process and vanish when *any* descriptor of the file is closed, so the locker keeps
  exactly one descriptor and writes the holder's identity through it.  A slave retries every
  ``retry`` seconds (0.1 s by default; ActiveMQ waits 10 s), so takeover after a master dies
  costs at most one retry plus store recovery.  While master, ``keep_alive`` checks that the
  lock file is still there, is the same inode, and still names us: on NFS a lock can be lost
  silently (lease expiry, server restart) and ActiveMQ would keep running as a second master.
* ``LeaseLocker``: for file systems whose locks cannot be trusted (NFSv3, OCFS2 without
  cluster locking).  The master rewrites ``<dir>/lease`` (holder + expiry, written to a temp
  file and renamed over the old one) every ``duration / 3``; a slave takes over only after the
  lease has expired, and a master that cannot renew stops before its lease runs out.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

log = Logger()


class ILocker(Interface):
    path = Attribute("the lock (or lease) file")

    def acquire():
        """-> Deferred that fires once we are master (cancel it to stop waiting)."""

    def keep_alive():
        """While master: True if we still hold the lock."""

    def release():
        """Give the lock up (after the store is closed)."""


def holder_identity(broker_name: str) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "broker": broker_name,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": os.urandom(8).hex()}


def _describe(holder) -> str:
    if not holder:
        return "an unknown holder"
    return "%s (pid %s on %s, since %s)" % (holder.get("broker"), holder.get("pid"),
                                            holder.get("host"), holder.get("started"))


class _Poller:
    """A Deferred that retries an attempt every `retry` seconds until it succeeds."""

    def __init__(self, clock, retry, attempt):
        self.clock = clock
        self.retry = retry
        self.attempt = attempt
        self.call = None
        self.deferred = defer.Deferred(self._cancel)

    def start(self):
        self._try()
        return self.deferred

    def _try(self):
        self.call = None
        try:
            done = self.attempt()
        except Exception as e:
            self.deferred.errback(e)
            return
        if done:
            self.deferred.callback(None)
        else:
            self.call = self.clock.callLater(self.retry, self._try)

    def _cancel(self, _):
        if self.call is not None and self.call.active():
            self.call.cancel()


@implementer(ILocker)
class FileLocker:
    def __init__(self, directory, broker_name="localhost", retry=0.1, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.directory = directory
        self.path = os.path.join(directory, "lock")
        self.retry = retry
        self.clock = clock
        self.identity = holder_identity(broker_name)
        self._fd = None
        self._inode = None
        self._announced = False

    def _try_lock(self) -> bool:
        if self._fd is None:
            os.makedirs(self.directory, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            if not self._announced:
                self._announced = True
                log.info("slave: waiting for the lock on {path} held by {holder}",
                         path=self.path, holder=_describe(self._read_holder()))
            # the file may have been replaced meanwhile: retry on a fresh descriptor
            if not self._same_file():
                os.close(self._fd)
                self._fd = None
            return False
        if not self._same_file():
            # we locked a file that was unlinked or replaced since we opened it
            os.close(self._fd)
            self._fd = None
            return False
        data = json.dumps(self.identity).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)
        self._inode = os.fstat(self._fd).st_ino
        log.info("master: holding the lock on {path}", path=self.path)
        return True

    def _same_file(self) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return False

    def holder(self):
        """Who holds the lock, as it wrote itself into the file (None if unknown)."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(4096)
            return json.loads(raw.decode()) if raw else None
        except (OSError, ValueError):
            return None

    def _read_holder(self):
        try:
            raw = os.pread(self._fd, 4096, 0)
            return json.loads(raw.decode()) if raw else None
        except (OSError, ValueError):
            return None

    def acquire(self):
        return _Poller(self.clock, self.retry, self._try_lock).start()

    def keep_alive(self) -> bool:
        if self._fd is None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if st.st_ino != self._inode:
            return False
        holder = self._read_holder()
        return bool(holder) and holder.get("token") == self.identity["token"]

    def release(self):
        if self._fd is not None:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
        return defer.succeed(None)


@implementer(ILocker)
class LeaseLocker:
    def __init__(self, directory, broker_name="localhost", duration=10.0, retry=None, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.directory = directory
        self.path = os.path.join(directory, "lease")
        self.duration = duration
        self.retry = retry if retry is not None else min(duration / 10.0, 1.0)
        self.clock = clock
        self.identity = holder_identity(broker_name)
        self._renewer = None
        self._claimed_at = None
        self._announced = False
        self.lost = None  # called with a reason if renewal fails

    def _read(self):
        try:
            with open(self.path, "rb") as f:
                return json.loads(f.read().decode())
        except (OSError, ValueError):
            return None

    def holder(self):
        return self._read()

    def _write(self):
        lease = dict(self.identity, expires=time.time() + self.duration)
        tmp = "%s.%s.tmp" % (self.path, self.identity["token"])
        with open(tmp, "wb") as f:
            f.write(json.dumps(lease).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return lease

    def _mine(self, lease) -> bool:
        return bool(lease) and lease.get("token") == self.identity["token"]

    def _attempt(self) -> bool:
        os.makedirs(self.directory, exist_ok=True)
        lease = self._read()
        now = time.time()
        if self._claimed_at is not None:
            # we wrote a claim: we won if it is still ours after a settling pause
            if self._mine(lease):
                self._expires = lease["expires"]
                log.info("master: holding the lease {path}", path=self.path)
                return True
            self._claimed_at = None
            return False
        if lease and not self._mine(lease) and lease.get("expires", 0) > now:
            if not self._announced:
                self._announced = True
                log.info("slave: waiting for the lease {path} held by {holder} (expires in {s:.1f}s)",
                         path=self.path, holder=_describe(lease), s=lease["expires"] - now)
            return False
        self._write()
        self._claimed_at = now
        return False  # confirm on the next attempt, after any racing claim has landed

    def acquire(self):
        d = _Poller(self.clock, self.retry, self._attempt).start()
        d.addCallback(self._start_renewing)
        return d

    def _start_renewing(self, _):
        self._renewer = self.clock.callLater(self.duration / 3.0, self._renew)

    def _renew(self):
        self._renewer = None
        lease = self._read()
        if not self._mine(lease):
            self._lose("the lease %s now names %s" % (self.path, _describe(lease)))
            return
        try:
            self._expires = self._write()["expires"]
            delay = self.duration / 3.0
        except OSError as e:
            if time.time() >= self._deadline():
                self._lose("cannot renew the lease %s: %s" % (self.path, e))
                return
            log.warn("lease renewal failed ({error}); retrying", error=e)
            delay = self.retry
        self._renewer = self.clock.callLater(delay, self._renew)

    def _deadline(self):
        """When a master that could not renew must be gone: well before a slave may take over."""
        return self._expires - max(self.duration / 5.0, 2 * self.retry)

    def _lose(self, reason):
        self._expires = 0
        if self.lost is not None:
            self.lost(reason)

    def keep_alive(self) -> bool:
        return time.time() < self._deadline() and self._mine(self._read())

    _expires = 0.0

    def release(self):
        if self._renewer is not None and self._renewer.active():
            self._renewer.cancel()
        self._renewer = None
        lease = self._read()
        if self._mine(lease):
            try:
                os.unlink(self.path)
            except OSError:
                pass
        return defer.succeed(None)
