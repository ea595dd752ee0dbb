"""Scheduler timing and cron semantics driven by a fake clock (no real minutes pass)."""

import datetime

import pytest
from twisted.python.failure import Failure
from twisted.internet.task import Clock

from pybrokerd.broker.core import Broker
from pybrokerd.broker.destination import QUEUE, Destination
from pybrokerd.broker.message import Message
from scheduler.scheduler import ScheduleError, Scheduler, next_cron_time, parse
from stores.memory import MemoryPersistenceAdapter

def sync(d):
    """The memory stores answer at once: the Deferred has already fired."""
    out = []
    d.addBoth(out.append)
    assert out, "expected an already-fired Deferred"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


START = datetime.datetime(2026, 11, 25, 10, 0, 30)  # a Wednesday, local time


def setup():
    clock = Clock()
    clock.advance(START.timestamp())
    broker = Broker(MemoryPersistenceAdapter(), clock=clock, expiry_check_interval=0)
    sched = Scheduler(broker, MemoryPersistenceAdapter(), clock=clock)
    broker.scheduler = sched
    sync(sched.start())
    return clock, broker, sched


def send(broker, **headers):
    msg = Message("ID:m-%d" % len(headers), Destination(QUEUE, "q"), b"x",
                  properties={k: str(v) for k, v in headers.items()})
    sync(broker.send(msg))
    return msg


def delivered(broker):
    q = broker.queues.get(Destination(QUEUE, "q"))
    return list(q.pending) if q else []


def advance_to(clock, when: datetime.datetime):
    clock.advance(when.timestamp() - clock.seconds())


def test_delay_fires_exactly_on_time():
    clock, broker, _ = setup()
    send(broker, AMQ_SCHEDULED_DELAY=1500)
    clock.advance(1.499)
    assert delivered(broker) == []
    clock.advance(0.001)
    (m,) = delivered(broker)
    assert m.message_id == "ID:m-1"  # a one-shot delayed message keeps its id
    assert "AMQ_SCHEDULED_DELAY" not in m.properties and m.properties["scheduledJobId"]


def test_a_job_read_back_from_its_store_keeps_its_message_id():
    """A job due later than the in-memory window, and one recovered by a restarted scheduler,
    keep the producer's message id only in their store: the delivery still carries it."""
    clock, broker, sched = setup()
    send(broker, AMQ_SCHEDULED_DELAY=3600 * 1000)          # cold: read back when it fires
    (job,) = sched.jobs.values()
    assert not hasattr(job, "__dict__") and job.delay == 3600 * 1000
    restarted = Scheduler(broker, sched.adapter, clock=clock)
    sched.stop()
    broker.scheduler = restarted
    sync(restarted.start())
    assert [j.job_id for j in restarted.jobs.values()] == [job.job_id]
    clock.advance(3600)
    (m,) = delivered(broker)
    assert m.message_id == "ID:m-1"
    assert m.properties["scheduledJobId"] == job.job_id
    assert restarted.jobs == {}


def test_period_without_delay_waits_one_period():
    clock, broker, _ = setup()
    send(broker, AMQ_SCHEDULED_PERIOD=1000)
    clock.advance(0.999)
    assert delivered(broker) == []
    clock.advance(0.001)
    assert len(delivered(broker)) == 1
    clock.advance(10)
    assert len(delivered(broker)) == 1  # no repeat asked for


def test_repeat_runs_repeat_plus_one_times_each_a_new_message():
    clock, broker, sched = setup()
    send(broker, AMQ_SCHEDULED_DELAY=100, AMQ_SCHEDULED_PERIOD=200, AMQ_SCHEDULED_REPEAT=3)
    clock.advance(0.1)
    for _ in range(5):
        clock.advance(0.2)
    got = delivered(broker)
    assert len(got) == 4
    assert len({m.message_id for m in got}) == 4
    assert len({m.properties["scheduledJobId"] for m in got}) == 1
    assert sched.jobs == {}


def test_cron_fires_at_every_cron_time():
    clock, broker, _ = setup()
    send(broker, AMQ_SCHEDULED_CRON="*/5 * * * *")
    advance_to(clock, START.replace(minute=4, second=59))
    assert delivered(broker) == []
    advance_to(clock, START.replace(minute=5, second=0))
    assert len(delivered(broker)) == 1
    for minute in range(6, 31):
        advance_to(clock, START.replace(minute=minute, second=0))
    assert len(delivered(broker)) == 6


def test_cron_with_delay_delays_each_first_run():
    clock, broker, _ = setup()
    send(broker, AMQ_SCHEDULED_CRON="0 * * * *", AMQ_SCHEDULED_DELAY=2000)
    advance_to(clock, START.replace(hour=11, minute=0, second=1))
    assert delivered(broker) == []
    advance_to(clock, START.replace(hour=11, minute=0, second=2))
    assert len(delivered(broker)) == 1


def test_cron_with_repeat_starts_a_series_at_each_cron_time():
    clock, broker, _ = setup()
    send(broker, AMQ_SCHEDULED_CRON="0 * * * *", AMQ_SCHEDULED_PERIOD=1000, AMQ_SCHEDULED_REPEAT=2)
    advance_to(clock, START.replace(hour=11, minute=0, second=1))
    for _ in range(5):
        clock.advance(1)
    assert len(delivered(broker)) == 3  # one series: repeat + 1 runs, a second apart
    advance_to(clock, START.replace(hour=12, minute=0, second=2))
    for _ in range(5):
        clock.advance(1)
    assert len(delivered(broker)) == 6


def test_day_of_week_zero_is_sunday():
    sunday = next_cron_time("0 0 * * 0", int(START.timestamp() * 1000))
    assert datetime.datetime.fromtimestamp(sunday / 1000).strftime("%A %H:%M") == "Sunday 00:00"


def test_overdue_jobs_fire_at_once_when_the_scheduler_starts():
    clock, broker, sched = setup()
    send(broker, AMQ_SCHEDULED_DELAY=1000)
    sched.stop()
    clock.advance(60)  # the broker was down
    assert delivered(broker) == []
    sched._running = True
    sync(sched.start())
    clock.advance(0)
    assert len(delivered(broker)) == 1


@pytest.mark.parametrize("headers,name", [
    ({"AMQ_SCHEDULED_DELAY": "soon"}, "AMQ_SCHEDULED_DELAY"),
    ({"AMQ_SCHEDULED_DELAY": "-5"}, "AMQ_SCHEDULED_DELAY"),
    ({"AMQ_SCHEDULED_PERIOD": "1.5"}, "AMQ_SCHEDULED_PERIOD"),
    ({"AMQ_SCHEDULED_REPEAT": "x"}, "AMQ_SCHEDULED_REPEAT"),
    ({"AMQ_SCHEDULED_REPEAT": "1001"}, "AMQ_SCHEDULED_REPEAT"),
    ({"AMQ_SCHEDULED_CRON": "every minute"}, "AMQ_SCHEDULED_CRON"),
])
def test_bad_values_name_the_header(headers, name):
    with pytest.raises(ScheduleError) as e:
        parse(headers)
    assert name in str(e.value)


def test_a_run_whose_destination_is_gone_fails_alone():
    """A job to a temporary queue deleted since it was scheduled is dropped with a warning;
    a job due at the same moment is delivered all the same."""
    from pybrokerd.broker.destination import TEMP_QUEUE
    clock, broker, sched = setup()
    temp = Destination(TEMP_QUEUE, "ID:gone:1")
    broker.temp_owners[temp] = "conn"
    sync(broker.send(Message("ID:to-temp", temp, b"t",
                             properties={"AMQ_SCHEDULED_DELAY": "1000"})))
    send(broker, AMQ_SCHEDULED_DELAY=1000)
    del broker.temp_owners[temp]  # its connection went away
    clock.advance(1.0)
    (m,) = delivered(broker)
    assert m.message_id == "ID:m-1"
    assert sched.jobs == {}


def test_a_repeating_job_that_fell_behind_fires_once_then_resumes_one_period_apart():
    """As ActiveMQ: after downtime the overdue run fires once (no burst of the runs
    missed), and the rest follow one period apart from then; every run still comes."""
    clock, broker, sched = setup()
    send(broker, AMQ_SCHEDULED_DELAY=1000, AMQ_SCHEDULED_PERIOD=2000, AMQ_SCHEDULED_REPEAT=9)
    clock.advance(1.0)
    clock.advance(2.0)
    assert len(delivered(broker)) == 2
    sched.stop()
    clock.advance(9.5)  # the broker was down for the runs due at 5, 7, 9, 11 s
    sched._running = True
    sync(sched.start())
    clock.advance(0)
    assert len(delivered(broker)) == 3  # one, not five
    clock.advance(1.999)
    assert len(delivered(broker)) == 3
    clock.advance(0.001)
    assert len(delivered(broker)) == 4
    for _ in range(10):
        clock.advance(2.0)
    assert len(delivered(broker)) == 10 and sched.jobs == {}


def test_timestamps_of_scheduled_deliveries():
    """As ActiveMQ: a delivery keeps the time the message was sent, unless the message has
    a time to live: then it is stamped when it fires and keeps its time to live."""
    clock, broker, _ = setup()
    sent = int(clock.seconds() * 1000)
    msg = Message("ID:plain", Destination(QUEUE, "q"), b"x", timestamp=sent,
                  properties={"AMQ_SCHEDULED_DELAY": "1000"})
    sync(broker.send(msg))
    ttl = Message("ID:ttl", Destination(QUEUE, "q"), b"x", timestamp=sent, expires=sent + 60000,
                  properties={"AMQ_SCHEDULED_DELAY": "1000"})
    sync(broker.send(ttl))
    clock.advance(1.0)
    plain, lived = delivered(broker)
    assert plain.timestamp == sent
    assert lived.timestamp == sent + 1000 and lived.expires == sent + 61000
