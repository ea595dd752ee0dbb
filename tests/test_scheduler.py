"""Scheduled messages over STOMP against real brokers: timing, management, restarts, failover."""

import time

import pytest

from support import (BrokerProcess, RawStomp, free_port, shared_dir_brokers,
                     start_master_and_slaves, unique, wait_until)


def q():
    return "/queue/" + unique()


def test_delay_is_honoured_to_the_millisecond(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    sent = time.time()
    assert c.receipt("SEND", {"destination": dest, "AMQ_SCHEDULED_DELAY": "700"}, b"d").command == "RECEIPT"
    m = c.recv_command("MESSAGE", timeout=5)
    late = time.time() - sent - 0.7
    print("delivered %.1f ms after the delay" % (late * 1000))
    assert 0 <= late < 0.1
    assert m.headers["scheduledJobId"]
    assert "AMQ_SCHEDULED_DELAY" not in m.headers


def test_a_job_is_named_after_its_message_as_activemq_does(raw):
    """ActiveMQ 5.17 names a job after the message scheduled: a one-shot delivery keeps the
    message id, which is also its scheduledJobId; every run of a repeating job carries the
    message id the producer's send got as scheduledJobId, and a fresh message id of its own."""
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.receipt("SEND", {"destination": dest, "AMQ_SCHEDULED_DELAY": "50"}, b"once")
    once = c.recv_command("MESSAGE", timeout=5)
    assert once.headers["scheduledJobId"] == once.headers["message-id"]
    c.receipt("SEND", {"destination": dest, "AMQ_SCHEDULED_PERIOD": "50",
                       "AMQ_SCHEDULED_REPEAT": "1"}, b"twice")
    runs = [c.recv_command("MESSAGE", timeout=5) for _ in range(2)]
    job = runs[0].headers["scheduledJobId"]
    assert [m.headers["scheduledJobId"] for m in runs] == [job, job]
    assert len({m.headers["message-id"] for m in runs} | {job}) == 3
    # the job id is the id the broker gave the send: of this connection, after the first's
    assert job.rsplit(":", 1)[0] == once.headers["message-id"].rsplit(":", 1)[0]


def test_repeat_with_period(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.receipt("SEND", {"destination": dest, "AMQ_SCHEDULED_DELAY": "100", "AMQ_SCHEDULED_PERIOD": "150",
                       "AMQ_SCHEDULED_REPEAT": "3"}, b"r")
    msgs = [c.recv_command("MESSAGE", timeout=5) for _ in range(4)]
    assert len({m.headers["message-id"] for m in msgs}) == 4
    assert len({m.headers["scheduledJobId"] for m in msgs}) == 1
    # as ActiveMQ: every run carries the time the message was sent, not the time it ran
    assert len({m.headers["timestamp"] for m in msgs}) == 1
    assert c.maybe_recv(0.4) is None


def test_a_zero_delay_is_delivered_after_the_senders_receipt(raw):
    """As ActiveMQ: the job is stored first (the RECEIPT), then it runs."""
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.send("SEND", {"destination": dest, "AMQ_SCHEDULED_DELAY": "0", "receipt": "z"}, b"zero")
    first, second = c.recv(5), c.recv(5)
    assert (first.command, second.command) == ("RECEIPT", "MESSAGE")
    assert second.body == b"zero" and second.headers["scheduledJobId"]


@pytest.mark.parametrize("header,value", [("AMQ_SCHEDULED_DELAY", "abc"),
                                          ("AMQ_SCHEDULED_PERIOD", "-1"),
                                          ("AMQ_SCHEDULED_REPEAT", "-1"),
                                          ("AMQ_SCHEDULED_CRON", "61 * * * *"),
                                          ("AMQ_SCHEDULED_CRON", ""),
                                          ("AMQ_SCHEDULED_CRON", "0 0 31 2 *")])
def test_bad_schedule_is_an_error_naming_the_header(raw, header, value):
    c = raw()
    headers = {"destination": q(), "AMQ_SCHEDULED_PERIOD": "1000", header: value}
    frame = c.receipt("SEND", headers, b"x")
    assert frame.command == "ERROR" and header in frame.headers["message"], frame
    assert c.receipt("BEGIN", {"transaction": "still-open"}).command == "RECEIPT"


def test_scheduled_send_in_transaction_is_scheduled_at_commit(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.receipt("BEGIN", {"transaction": "t1"})
    c.receipt("SEND", {"destination": dest, "transaction": "t1", "AMQ_SCHEDULED_DELAY": "100"}, b"kept")
    c.receipt("BEGIN", {"transaction": "t2"})
    c.receipt("SEND", {"destination": dest, "transaction": "t2", "AMQ_SCHEDULED_DELAY": "100"}, b"dropped")
    c.receipt("ABORT", {"transaction": "t2"})
    assert c.maybe_recv(0.3) is None  # not scheduled before COMMIT
    committed = time.time()
    c.receipt("COMMIT", {"transaction": "t1"})
    assert c.recv_command("MESSAGE").body == b"kept"
    assert time.time() - committed >= 0.1
    assert c.maybe_recv(0.3) is None


def manage(c, action, reply_to=None, **headers):
    h = dict(headers, AMQ_SCHEDULER_ACTION=action)
    if reply_to:
        h["reply-to"] = reply_to
    h["destination"] = "/queue/ActiveMQ.Scheduler.Management"
    return c.receipt("SEND", h)


def browse(c, reply, **window):
    assert manage(c, "BROWSE", reply, **window).command == "RECEIPT"
    found = []
    while True:
        m = c.maybe_recv(0.3)
        if m is None:
            return found
        found.append(m)


def test_management_browse_remove_removeall():
    proc = BrokerProcess().start()  # its own broker: management sees every job
    try:
        c = RawStomp(proc.port)
        c.connect()
        reply = "/queue/" + unique("reply")
        c.receipt("SUBSCRIBE", {"destination": reply, "id": "r"})
        dest = q()
        now = int(time.time() * 1000)
        for delay in (60000, 120000, 180000):
            c.receipt("SEND", {"destination": dest, "AMQ_SCHEDULED_DELAY": str(delay), "d": str(delay)}, b"j")
        jobs = browse(c, reply)
        assert [m.headers["d"] for m in jobs] == ["60000", "120000", "180000"]
        ids = [m.headers["scheduledJobId"] for m in jobs]
        window = browse(c, reply, ACTION_START_TIME=str(now + 90000), ACTION_END_TIME=str(now + 150000))
        assert [m.headers["scheduledJobId"] for m in window] == [ids[1]]
        assert manage(c, "REMOVE", scheduledJobId=ids[0]).command == "RECEIPT"
        assert [m.headers["scheduledJobId"] for m in browse(c, reply)] == ids[1:]
        assert manage(c, "REMOVEALL", ACTION_START_TIME=str(now + 150000)).command == "RECEIPT"
        assert [m.headers["scheduledJobId"] for m in browse(c, reply)] == [ids[1]]
        assert manage(c, "REMOVEALL").command == "RECEIPT"
        assert browse(c, reply) == []
        frame = manage(c, "EXPLODE")
        assert frame.command == "ERROR" and "BROWSE" in frame.headers["message"]
        # the action is matched exactly, as ActiveMQ: "removeall" removes nothing
        c.receipt("SEND", {"destination": dest, "AMQ_SCHEDULED_DELAY": "60000"}, b"j")
        assert manage(c, "removeall").command == "ERROR"
        kept = browse(c, reply)
        assert len(kept) == 1
        # each BROWSE reply is a new message (the job is named by scheduledJobId)
        again = browse(c, reply)
        assert kept[0].headers["scheduledJobId"] == again[0].headers["scheduledJobId"]
        assert kept[0].headers["message-id"] != again[0].headers["message-id"]
        assert kept[0].headers["message-id"] != kept[0].headers["scheduledJobId"]
    finally:
        proc.stop()


@pytest.mark.parametrize("store", ["kahadb", "lmdb", "leveldb"])
def test_jobs_survive_kill_9_and_fire_on_time(tmp_path, store):
    port = free_port()
    proc = BrokerProcess("--store=%s" % store, directory=str(tmp_path), port=port).start()
    try:
        c = RawStomp(proc.port)
        c.connect()
        dest = q()
        sent = time.time()
        c.receipt("SEND", {"destination": dest, "AMQ_SCHEDULED_DELAY": "200", "persistent": "true"}, b"overdue")
        c.receipt("SEND", {"destination": dest, "AMQ_SCHEDULED_DELAY": "4000", "persistent": "true"}, b"on-time")
        proc.kill()
        time.sleep(0.3)  # the first job falls due while no broker runs: that is the point
        proc = proc.restarted()
        proc.start()
        c = RawStomp(proc.port)
        c.connect()
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
        assert c.recv_command("MESSAGE").body == b"overdue"
        m = c.recv_command("MESSAGE", timeout=6)
        assert m.body == b"on-time"
        assert 3.9 <= time.time() - sent < 4.6  # not early; late only by a loaded machine
        assert c.maybe_recv(0.5) is None  # none fired twice
    finally:
        proc.kill()


def test_job_pending_at_kill_fires_on_the_new_master(tmp_path):
    a, b = start_master_and_slaves(shared_dir_brokers(tmp_path))
    try:
        c = RawStomp(a.port)
        c.connect()
        dest = q()
        c.receipt("SEND", {"destination": dest, "AMQ_SCHEDULED_DELAY": "1500"}, b"across")
        a.kill()
        assert wait_until(b.accepts, 5)
        c = RawStomp(b.fixed_port)
        c.connect()
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
        assert c.recv_command("MESSAGE", timeout=5).body == b"across"
    finally:
        a.kill()
        b.kill()


def test_broker_side_redelivery_delay_with_backoff_then_dlq(tmp_path):
    proc = BrokerProcess("--redelivery-delay=200", "--redelivery-backoff=2",
                         "--max-redeliveries=2", directory=str(tmp_path)).start()
    try:
        c = RawStomp(proc.port)
        c.connect()
        dest = q()
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client-individual"})
        c.receipt("SEND", {"destination": dest, "persistent": "true"}, b"flaky")
        m = c.recv_command("MESSAGE")
        gaps = []
        for attempt in range(2):
            nacked = time.time()
            c.receipt("NACK", {"id": m.headers["ack"]})
            m = c.recv_command("MESSAGE", timeout=5)
            gaps.append(time.time() - nacked)
            assert m.body == b"flaky" and m.headers["redelivered"] == "true"
        assert 0.19 <= gaps[0] < 0.35 and 0.39 <= gaps[1] < 0.6  # 200 ms, then 400 ms
        c.receipt("NACK", {"id": m.headers["ack"]})  # the third strike: DLQ
        assert c.maybe_recv(1.0) is None
        dlq = RawStomp(proc.port)
        dlq.connect()
        dlq.receipt("SUBSCRIBE", {"destination": "/queue/ActiveMQ.DLQ", "id": "d"})
        assert dlq.recv_command("MESSAGE").body == b"flaky"
    finally:
        proc.stop()
