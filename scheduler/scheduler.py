"""Delayed, repeated and cron messages (ActiveMQ's AMQ_SCHEDULED_* headers).

A scheduled message is kept in the scheduler's own store (``--scheduler-dir``) as a job, not in
its destination, until it fires.  In memory there is only a heap of (fire time, job id) and a
small record per job; the message itself is read back from the job store when it fires, so a
million pending jobs cost little RAM.  One reactor timer is armed for the earliest job; a job
that is late (a busy reactor, a restart, a failover) fires late, never never.

Semantics follow ActiveMQ's JobSchedulerImpl, except that times are not rounded up to the next
500 ms: the first run is at now + delay (or now + period when there is no delay), or at the next
cron time + delay; a repeat runs every period, ``repeat`` more times; a cron job without repeat
runs at every cron time; a cron job with repeat starts, at every cron time, a series of
``repeat + 1`` runs (delay, then every period).  Each run of a repeating job is a new message
with a new message-id and the job's ``scheduledJobId``.
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import json
import os
import time

from croniter import CroniterError, croniter
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from pybrokerd.broker.destination import Destination
from scheduler.interfaces import IJobStore

log = Logger()

DELAY = "AMQ_SCHEDULED_DELAY"
PERIOD = "AMQ_SCHEDULED_PERIOD"
REPEAT = "AMQ_SCHEDULED_REPEAT"
CRON = "AMQ_SCHEDULED_CRON"
JOB_ID = "scheduledJobId"
SCHEDULING_HEADERS = (DELAY, PERIOD, REPEAT, CRON)
_SCHEDULING = frozenset(SCHEDULING_HEADERS)


def has_scheduling_headers(properties) -> bool:
    """Does a send carry any AMQ_SCHEDULED_* header (one set test, on every send)?"""
    return bool(properties) and not _SCHEDULING.isdisjoint(properties)
MANAGEMENT = "activemq.scheduler.management"
ACTION = "AMQ_SCHEDULER_ACTION"
START_TIME = "ACTION_START_TIME"
END_TIME = "ACTION_END_TIME"
MAX_REPEAT = 1000  # ActiveMQ's maxSchedulerRepeatAllowed
_JOB = "__pybrokerd_job"  # where a stored job keeps its schedule


class ScheduleError(ValueError):
    """A scheduling header a user must fix; str(e) names it."""


def is_scheduled(message) -> bool:
    props = message.properties
    return bool(props) and message.scheduled_job_id is None and (
        DELAY in props or PERIOD in props or CRON in props)


def is_management(destination: Destination) -> bool:
    # on every send: look at the first letter before lower-casing the whole name
    name = destination.name
    return name[:1] in "aA" and name.lower().startswith(MANAGEMENT)


def _number(props, name, minimum=0):
    value = props.get(name)
    if value is None:
        return 0
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ScheduleError("%s must be a whole number of %s, not %r"
                            % (name, "times" if name == REPEAT else "milliseconds", value))
    if number < minimum:
        raise ScheduleError("%s must not be negative (got %d)" % (name, number))
    return number


def parse(props) -> dict:
    """Validate the scheduling headers of a message; return its schedule."""
    delay = _number(props, DELAY)
    period = _number(props, PERIOD)
    repeat = _number(props, REPEAT)  # ActiveMQ 5.17 refuses a negative one too
    if repeat > MAX_REPEAT:
        raise ScheduleError("%s of %d is over the limit of %d" % (REPEAT, repeat, MAX_REPEAT))
    cron = props.get(CRON)
    if cron is not None:
        cron = cron.strip()
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise ScheduleError("%s %r is not a valid 5-field cron expression "
                                "(minute hour day-of-month month day-of-week)" % (CRON, cron))
        try:
            next_cron_time(cron, int(time.time() * 1000))
        except CroniterError:
            raise ScheduleError("%s %r never names a date (such as 31 February): the message "
                                "would never be delivered" % (CRON, cron)) from None
    return {"delay": delay, "period": period, "repeat": repeat, "cron": cron}


def next_cron_time(cron: str, after_ms: int) -> int:
    """The first time strictly after `after_ms` that the cron expression names (local time)."""
    base = datetime.datetime.fromtimestamp(after_ms / 1000.0)
    nxt = croniter(cron, base).get_next(datetime.datetime)
    return int(nxt.timestamp() * 1000)


class Job:
    """A pending one-shot job: only what the heap and the admin views need.  A million of
    these are held in memory, so the rest of a job (the producer's message id) stays in the
    job store and is read back with the message when the job fires."""

    __slots__ = ("job_id", "next_time", "created")
    period = 0
    repeat = 0
    runs = 0
    cron = None

    def __init__(self, job_id, next_time, created=0):
        self.job_id = job_id
        self.next_time = next_time
        self.created = created

    @property
    def delay(self) -> int:
        return self.next_time - self.created

    def state(self, message_id=None) -> dict:
        return {"job_id": self.job_id, "next_time": self.next_time, "delay": self.delay,
                "period": self.period, "repeat": self.repeat, "cron": self.cron,
                "created": self.created, "runs": self.runs, "message_id": message_id}


class RepeatingJob(Job):
    """A job with a period, a repeat count or a cron expression: it runs more than once."""

    __slots__ = ("delay", "period", "repeat", "cron", "runs")

    def __init__(self, job_id, next_time, delay=0, period=0, repeat=0, cron=None, created=0,
                 runs=0):
        super().__init__(job_id, next_time, created)
        self.delay = delay
        self.period = period
        self.repeat = repeat
        self.cron = cron
        self.runs = runs


def make_job(job_id, next_time, delay=0, period=0, repeat=0, cron=None, created=0, runs=0,
             message_id=None) -> Job:
    """The smallest Job that can hold this schedule (`message_id` is kept in the store only)."""
    if cron is None and repeat == 0 and period == 0 and runs == 0 and next_time - created == delay:
        return Job(job_id, next_time, created)
    return RepeatingJob(job_id, next_time, delay, period, repeat, cron, created, runs)


@implementer(IJobStore)
class JobStore:
    """Jobs kept in a persistence adapter's queue store, one stored message per job."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.store = adapter.queue_store("pybrokerd.scheduler.jobs")

    @defer.inlineCallbacks
    def load(self):
        """All jobs, without their message bodies."""
        jobs, after = [], None
        while True:
            batch = yield self.store.recover(10000, after)
            if not batch:
                break
            for stored in batch:
                state = json.loads(stored.properties[_JOB])
                state["job_id"] = stored.message_id  # the store's own string: one per job
                jobs.append(make_job(**state))
            after = batch[-1].message_id
        return jobs

    def stored(self, job: Job, message):
        """The form a job takes in the store: its message, with the schedule as a property."""
        stored = message.copy(message_id=job.job_id)
        stored.properties[_JOB] = json.dumps(job.state(message.message_id))
        return stored

    def schedule(self, job: Job, message):
        return self.store.add(self.stored(job, message))

    def update(self, job: Job, message):
        return self.adapter.transaction([("remove", self.store, job.job_id),
                                         ("add", self.store, self.stored(job, message))])

    def message(self, job_id):
        return self.messages([job_id]).addCallback(lambda found: found.get(job_id))

    def messages(self, job_ids):
        """-> Deferred firing with {job id: Message} for those still stored, read in one go;
        each Message has the message id its producer gave it (when the job kept one)."""
        d = self.store.get_many(job_ids)
        return d.addCallback(lambda messages: {m.message_id: _without_state(m) for m in messages})

    def remove(self, job_id):
        return self.store.remove(job_id)

    def count(self):
        return self.store.count()


def _without_state(stored):
    stored = stored.copy()
    state = stored.properties.pop(_JOB, None)
    if state is not None:
        stored.message_id = json.loads(state).get("message_id") or stored.message_id
    return stored


HOT_WINDOW = 60000   # ms: a job due this soon keeps its message in memory
HOT_LIMIT = 100000   # at most this many such messages


class Scheduler:
    def __init__(self, broker, adapter, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.broker = broker
        self.adapter = adapter
        self.clock = clock
        self.jobs_store = JobStore(adapter)
        self.jobs: dict[str, Job] = {}
        self._heap: list[tuple[int, str]] = []
        self._hot: dict[str, object] = {}  # job id -> message, for jobs due soon
        self._timer = None
        self._ids = itertools.count(1)
        self._prefix = "ID:scheduler-%d-%s" % (self.now(), os.urandom(2).hex())
        self._running = False

    def now(self) -> int:
        """Milliseconds since the epoch, from the injected clock (the reactor: wall time)."""
        return int(self.clock.seconds() * 1000)

    # -- life cycle ----------------------------------------------------------------------
    @defer.inlineCallbacks
    def start(self):
        for job in (yield self.jobs_store.load()):
            self._add(job)
        self._running = True
        overdue = sum(1 for j in self.jobs.values() if j.next_time <= self.now())
        log.info("scheduler: {n} jobs pending ({overdue} overdue fire now)",
                 n=len(self.jobs), overdue=overdue)
        self._arm()

    def stop(self):
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- scheduling ----------------------------------------------------------------------
    def schedule(self, message) -> defer.Deferred:
        """Store a job for a message with AMQ_SCHEDULED_* headers. -> Deferred (durable)."""
        spec = parse(message.properties)
        now = self.now()
        # as ActiveMQ, a job is named after its message (scheduledJobId is the producer's
        # message id); an id already naming a job (a client that repeats its ids) gets one
        # of our own
        job_id = message.message_id
        if not job_id or job_id in self.jobs or job_id in self._hot:
            job_id = "%s:%d" % (self._prefix, next(self._ids))
        if spec["cron"]:
            first = next_cron_time(spec["cron"], now)
        else:
            first = now
        first += spec["delay"] if spec["delay"] > 0 else spec["period"]
        job = make_job(job_id, first, spec["delay"], spec["period"], spec["repeat"], spec["cron"],
                       created=now)
        message.scheduled_job_id = None
        d = self.jobs_store.schedule(job, message)
        if first - now <= HOT_WINDOW and len(self._hot) < HOT_LIMIT:
            self._hot[job_id] = message  # fires soon: no store read then

        # a job runs only once it is stored: never a delivery of a send that then fails, and
        # (as ActiveMQ) the sender's RECEIPT comes before even a zero delay's delivery
        def stored(result):
            self._add(job)
            self._arm()
            return result

        def failed(failure):
            self._hot.pop(job_id, None)
            return failure
        d.addCallbacks(stored, failed)
        return d

    def _add(self, job: Job) -> None:
        self.jobs[job.job_id] = job
        heapq.heappush(self._heap, (job.next_time, job.job_id))

    def _arm(self) -> None:
        if not self._running:
            return
        while self._heap and self._heap[0][1] not in self.jobs:
            heapq.heappop(self._heap)  # removed jobs leave stale heap entries
        if not self._heap:
            return
        delay = max((self._heap[0][0] - self.now()) / 1000.0, 0)
        if self._timer is not None and self._timer.active():
            if abs(self._timer.getTime() - (self.clock.seconds() + delay)) < 0.001:
                return
            self._timer.cancel()
        self._timer = self.clock.callLater(delay, self._fire_due)

    def _fire_due(self) -> None:
        self._timer = None
        now = self.now()
        runs = []
        while self._heap and self._heap[0][0] <= now:
            at, job_id = heapq.heappop(self._heap)
            job = self.jobs.get(job_id)
            if job is None or job.next_time != at:
                continue  # removed or rescheduled
            runs.append(self._run(job, now))
        self._arm()
        if not runs:
            return
        # the messages of every job due now, in one read (those due soon are in memory)
        cold = [run[0].job_id for run in runs if run[0].job_id not in self._hot]
        d = self.jobs_store.messages(cold) if cold else defer.succeed({})
        d.addCallback(self._deliver_all, runs)
        d.addErrback(lambda f: log.failure("firing scheduled jobs", f))

    def _run(self, job: Job, now: int):
        """Advance a job that is due; its delivery follows once its message is at hand."""
        spawn_series = job.cron is not None and job.repeat != 0
        repeating = job.cron is not None or job.repeat != 0
        if spawn_series:
            # ActiveMQ: each cron time of a cron+repeat job starts a fresh delay/period series
            series = make_job("%s:%d" % (self._prefix, next(self._ids)),
                              now + (job.delay if job.delay > 0 else job.period), job.delay,
                              job.period, job.repeat, None, created=now)

            @defer.inlineCallbacks
            def start_series(message):
                if message is None:
                    return
                yield self.jobs_store.schedule(series, message)
                self._add(series)
                self._arm()
            d = self.jobs_store.message(job.job_id).addCallback(start_series)
            d.addErrback(lambda f: log.failure("starting a cron series", f))
        runs = job.runs
        if job.cron is not None:
            try:
                job.next_time = next_cron_time(job.cron, max(now, job.next_time))
            except CroniterError:  # no date left for it (croniter looks some years ahead)
                log.warn("cron job {job} ({cron}) names no later date: it ends", job=job.job_id,
                         cron=job.cron)
                repeating = False
        elif job.repeat != 0:
            job.next_time = job.next_time + max(job.period, 1)
            if job.next_time <= now:
                # a period or more behind (the broker was down): as ActiveMQ, the overdue
                # run fires once and the rest follow one period apart from now, not a burst
                job.next_time = now + max(job.period, 1)
            if job.repeat > 0:
                job.repeat -= 1
        if repeating:
            job.runs += 1
            heapq.heappush(self._heap, (job.next_time, job.job_id))
        else:
            del self.jobs[job.job_id]
        return job, runs, repeating, spawn_series

    def _deliver_all(self, found, runs):
        """Send every due run, then, once the deliveries are durable, advance or drop all of
        their jobs in one store transaction (a crash in between repeats a run, never loses
        one)."""
        sends, after = [], []
        for job, runs_before, repeating, spawn_series in runs:
            stored = self._hot.get(job.job_id) or found.get(job.job_id)
            if not repeating:
                self._hot.pop(job.job_id, None)
            if stored is None:
                continue
            if not spawn_series:
                sends.append(self._send_run(stored, job, runs_before, repeating))
            after.append((job, stored))
        d = defer.DeferredList(sends, consumeErrors=True)
        d.addCallback(lambda _: self._advance(after))
        d.addErrback(lambda f: log.failure("advancing scheduled jobs", f))

    def _send_run(self, stored, job, runs_before, repeating):
        message = stored.copy(scheduled_job_id=job.job_id, seq=0)
        for name in SCHEDULING_HEADERS:
            message.properties.pop(name, None)
        message.properties[JOB_ID] = job.job_id
        series = repeating or runs_before > 0 or job.cron is not None
        if series or not message.message_id:
            message.message_id = "%s:run:%d" % (job.job_id, runs_before + 1)
        # else a one-shot job's delivery keeps its producer's message id (as ActiveMQ: the
        # job's id too, unless that id was taken)
        if stored.expires:
            # as ActiveMQ: a message with a time to live is stamped when it fires and keeps
            # its time to live from then; one without keeps the time it was sent
            now = self.now()
            message.timestamp = now
            message.expires = now + (stored.expires - stored.timestamp)
        # a refusal (a temporary destination deleted since) fails this run only, never the
        # other jobs due with it
        d = defer.maybeDeferred(self.broker.send, message)
        d.addErrback(lambda f: log.warn("scheduled job {job} could not be delivered: {error}",
                                        job=job.job_id, error=f.getErrorMessage()))
        return d

    def _advance(self, done):
        ops = []
        for job, stored in done:
            ops.append(("remove", self.jobs_store.store, job.job_id))
            if job.job_id in self.jobs:
                ops.append(("add", self.jobs_store.store, self.jobs_store.stored(job, stored)))
        return self.adapter.transaction(ops) if ops else None

    # -- management ----------------------------------------------------------------------
    def _window(self, props):
        # one bound alone counts (ActiveMQ ignores it: a REMOVEALL with only a start time
        # removes every job there; we remove only those from that time on)
        start = _number(props, START_TIME) if START_TIME in props else None
        end = _number(props, END_TIME) if END_TIME in props else None
        return start, end

    def select(self, start=None, end=None) -> list[Job]:
        return sorted((j for j in self.jobs.values()
                       if (start is None or j.next_time >= start) and (end is None or j.next_time <= end)),
                      key=lambda j: j.next_time)

    def remove(self, job_id) -> defer.Deferred:
        self._hot.pop(job_id, None)
        if self.jobs.pop(job_id, None) is None:
            return defer.succeed(None)
        return self.jobs_store.remove(job_id)

    def remove_all(self, start=None, end=None) -> defer.Deferred:
        return defer.gatherResults([self.remove(j.job_id) for j in self.select(start, end)])

    @defer.inlineCallbacks
    def manage(self, request) -> defer.Deferred:
        """A message sent to ActiveMQ.Scheduler.Management: BROWSE, REMOVE or REMOVEALL."""
        props = request.properties
        action = props.get(ACTION)  # exact, as ActiveMQ ("browse" is not an action)
        if action == "BROWSE":
            if request.reply_to is None:
                raise ScheduleError("BROWSE needs a reply-to header naming where to send the jobs")
            start, end = self._window(props)
            for job in self.select(start, end):
                stored = yield self.jobs_store.message(job.job_id)
                if stored is None:
                    continue
                # a fresh id per reply, as ActiveMQ (the job's id is in scheduledJobId)
                reply = stored.copy(message_id="%s:browse:%d" % (self._prefix, next(self._ids)),
                                    persistent=False, seq=0,
                                    destination=request.reply_to if isinstance(request.reply_to, Destination)
                                    else None, type="Advisory",
                                    original_destination=stored.destination)
                reply.properties[JOB_ID] = job.job_id
                reply.scheduled_job_id = job.job_id
                if reply.destination is None:
                    raise ScheduleError("BROWSE reply-to %r is not a destination" % (request.reply_to,))
                yield self.broker.send(reply)
        elif action == "REMOVE":
            job_id = props.get(JOB_ID)
            if not job_id:
                raise ScheduleError("REMOVE needs a scheduledJobId header")
            yield self.remove(job_id)
        elif action == "REMOVEALL":
            start, end = self._window(props)
            yield self.remove_all(start, end)
        else:
            raise ScheduleError("%s must be BROWSE, REMOVE or REMOVEALL (got %r)"
                                % (ACTION, props.get(ACTION)))
