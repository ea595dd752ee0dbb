"""Producer flow control: memory, store and scheduler limits (ActiveMQ's SystemUsage).

Three resources have a limit:

* memory: the bytes of the messages the broker holds in memory (pending in a queue or a
  subscription, or in flight to a consumer), counted as they come and go;
* store: the bytes of the persistent messages the store holds (live data, not file sizes, so
  that the room comes back the moment consumers ack, not when a journal segment is collected);
* scheduler: the bytes of the scheduled messages waiting in the scheduler's store.

A send that needs a full resource waits: the protocol stops reading the producer's socket and
asks `FlowControl.wait()` for a Deferred that fires once there is room again.  Unlike
ActiveMQ's default (block forever, which looks like a hung producer: reference section 8,
item 21), the wait ends after `send_fail_timeout` seconds with a ResourceLimitError naming the
limit and the option that sets it.  Rooms are re-checked on a short timer only while someone
waits, so the hot path costs one comparison per send.
"""

from __future__ import annotations

import collections
import re

from twisted.internet import defer, task
from twisted.logger import Logger

log = Logger()

PFC_URL = "http://activemq.apache.org/producer-flow-control.html"

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2,
          "mib": 1024 ** 2, "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3,
          "t": 1024 ** 4, "tb": 1024 ** 4, "tib": 1024 ** 4}


def parse_size(text) -> int:
    """'64mb', '1 GB', '512k', '1048576' -> bytes (ActiveMQ's "64 mb" spelling works too)."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError("%r is not a size (examples: 1048576, 512kb, 64mb, 1gb)" % (text,))
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < 0:
        raise ValueError("a size must not be negative")
    return value


def human(n: int) -> str:
    for unit, scale in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= scale:
            return "%.1f %s" % (n / scale, unit)
    return "%d bytes" % n


class Usage:
    """One limited resource.  `used` is a counter kept by the broker, unless `measure` reads
    the figure from its owner (a store)."""

    def __init__(self, name: str, option: str, limit: int = 0, measure=None):
        self.name = name
        self.option = option
        self.limit = limit  # 0: no limit
        self.used = 0
        self.measure = measure

    def current(self) -> int:
        return self.measure() if self.measure is not None else self.used

    def full(self) -> bool:
        return self.limit > 0 and self.current() >= self.limit

    def percent(self) -> int:
        return min(100, int(self.current() * 100 / self.limit)) if self.limit else 0

    def describe(self) -> str:
        return "%s of %s (%s)" % (human(self.current()), human(self.limit), self.option)

    def status(self) -> dict:
        return {"used": self.current(), "limit": self.limit, "percent": self.percent()}


class ResourceLimitError(Exception):
    """A send waited longer than --send-fail-timeout for room."""


class _Waiter:
    __slots__ = ("usage", "deferred", "deadline", "destination", "producer")

    def __init__(self, usage, deferred, deadline, destination, producer):
        self.usage = usage
        self.deferred = deferred
        self.deadline = deadline
        self.destination = destination
        self.producer = producer


class FlowControl:
    poll_interval = 0.05      # seconds between room checks while producers wait
    warn_interval = 30.0      # ActiveMQ's blockedProducerWarningInterval

    def __init__(self, clock, *, memory_limit: int = 0, store_limit: int = 0,
                 scheduler_limit: int = 0, send_fail_timeout: float = 30.0):
        self.clock = clock
        self.memory = Usage("memory", "--memory-limit", memory_limit)
        self.store = Usage("store", "--store-limit", store_limit, measure=lambda: 0)
        self.scheduler = Usage("scheduler", "--scheduler-limit", scheduler_limit,
                               measure=lambda: 0)
        self.send_fail_timeout = send_fail_timeout  # seconds; < 0: wait for ever
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._loop = None
        self._last_warning = {}
        self.blocked_sends = 0   # sends that had to wait
        self.failed_sends = 0    # sends refused after the timeout

    def usages(self) -> list[Usage]:
        return [self.memory, self.store, self.scheduler]

    # -- the check on every send ---------------------------------------------------------
    def blocker(self, message, scheduled: bool = False) -> Usage | None:
        """The full resource this message would need, or None when there is room."""
        if scheduled:
            return self.scheduler if self.scheduler.full() else None
        if message.persistent:
            if self.store.full():
                return self.store
            if message.destination.is_queue:
                return None  # persistent queue messages page out of memory; the store bounds them
        return self.memory if self.memory.full() else None

    def wait(self, usage: Usage, destination: str, producer: str) -> defer.Deferred:
        """Fires (None) once `usage` has room; fails with ResourceLimitError after the send
        fail timeout.  Waiters are served in arrival order."""
        self.blocked_sends += 1
        timeout = self.send_fail_timeout
        deadline = None if timeout < 0 else self.clock.seconds() + timeout
        waiter = _Waiter(usage, None, deadline, destination, producer)
        # cancelled when its connection goes: it leaves the queue at once
        d = waiter.deferred = defer.Deferred(lambda _: self._forget(waiter))
        if timeout == 0:
            self._fail(waiter)
            return d
        self._waiters.append(waiter)
        self._warn(waiter)
        if self._loop is None:
            self._loop = task.LoopingCall(self._check)
            self._loop.clock = self.clock
            self._loop.start(self.poll_interval, now=False)
        return d

    def _forget(self, waiter: _Waiter) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def waiting(self) -> int:
        return len(self._waiters)

    def _check(self) -> None:
        now = self.clock.seconds()
        # the callbacks may wait again (the send let through filled the limit): they must
        # find a fresh queue, not the one being walked
        waiters, self._waiters = self._waiters, collections.deque()
        ready, failed = [], []
        for waiter in waiters:
            if not waiter.usage.full():
                ready.append(waiter)
            elif waiter.deadline is not None and now >= waiter.deadline:
                failed.append(waiter)
            else:
                self._waiters.append(waiter)
                self._warn(waiter)
        for waiter in ready:
            waiter.deferred.callback(None)
        for waiter in failed:
            self._fail(waiter)
        if not self._waiters and self._loop is not None:
            self._loop.stop()
            self._loop = None

    def _warn(self, waiter: _Waiter) -> None:
        now = self.clock.seconds()
        last = self._last_warning.get(waiter.usage.name)
        if last is not None and now - last < self.warn_interval:
            return
        self._last_warning[waiter.usage.name] = now
        log.warn("{what} limit reached: {usage}; producers to {dest} and others wait for room "
                 "({n} waiting; a send fails after {timeout})", what=waiter.usage.name,
                 usage=waiter.usage.describe(), dest=waiter.destination, n=len(self._waiters),
                 timeout=("%g s (--send-fail-timeout)" % self.send_fail_timeout)
                 if self.send_fail_timeout >= 0 else "never")

    def _fail(self, waiter: _Waiter) -> None:
        self.failed_sends += 1
        usage = waiter.usage
        what = {"memory": "Usage Manager Memory Limit reached",
                "store": "Persistent store is Full, %d%% of %d" % (usage.percent(), usage.limit),
                "scheduler": "Job Scheduler Store is Full, %d%% of %d"
                             % (usage.percent(), usage.limit)}[usage.name]
        waited = ("blocked for %g s" % self.send_fail_timeout) if self.send_fail_timeout else \
            "not blocking"
        waiter.deferred.errback(ResourceLimitError(
            "%s. Stopping producer (%s) to prevent flooding %s: the %s limit is full, %s; "
            "the message was not sent (%s, --send-fail-timeout). See %s for more info"
            % (what, waiter.producer, waiter.destination, usage.name, usage.describe(), waited,
               PFC_URL)))

    def status(self) -> dict:
        result = {u.name: u.status() for u in self.usages()}
        result.update({"blocked_producers": len(self._waiters),
                       "blocked_sends": self.blocked_sends, "failed_sends": self.failed_sends,
                       "send_fail_timeout": self.send_fail_timeout})
        return result

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
