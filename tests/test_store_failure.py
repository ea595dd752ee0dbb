"""A store that cannot write (disk full, I/O error): nothing half-written is acknowledged,
persistent sends get a clear ERROR while the rest keeps working, and writes resume by
themselves once there is room.

The write errors are real: the process's file size limit (RLIMIT_FSIZE) makes the kernel refuse
to grow the store's files, the way a full disk refuses with ENOSPC; raising it again is the
operator freeing space."""

import glob
import os
import resource
import subprocess
import sys

import pytest

from pybrokerd.protocols.stomp.codec import serialize
from support import ROOT, BrokerProcess, RawStomp, unique, wait_until

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "store_failure_child.py")


@pytest.mark.parametrize("kind", ["kahadb", "lmdb", "leveldb"])
def test_a_store_survives_write_errors_and_recovers(tmp_path, kind):
    run = subprocess.run([sys.executable, CHILD, kind, str(tmp_path / "store")], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]


def _data_size(path):
    return os.stat(path).st_blocks * 512


def _limit_file_size(pid, limit):
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_the_broker_refuses_persistent_sends_while_its_store_cannot_write(tmp_path):
    broker = BrokerProcess(directory=str(tmp_path)).start()
    try:
        producer = RawStomp(broker.port)
        producer.connect()
        dest = "/queue/" + unique("full")
        body = b"d" * 1024
        assert producer.receipt("SEND", {"destination": dest, "persistent": "true", "n": "0"},
                                body).command == "RECEIPT"
        # the journal's current segment is preallocated (sparse): what it holds is what has
        # disk blocks, and a write at or past the limit fails however long the file is
        segment = max(glob.glob(os.path.join(broker.store_dir, "db-*.log")), key=_data_size)
        _limit_file_size(broker.proc.pid, _data_size(segment) + 256 * 1024)
        receipted, refused = [0], None
        for n in range(1, 2000):
            answer = producer.receipt("SEND", {"destination": dest, "persistent": "true",
                                               "n": str(n)}, body)
            if answer.command == "ERROR":
                refused = answer.headers["message"]
                break
            receipted.append(n)
        assert refused is not None, "the file size limit never failed a write"
        assert "could not store" in refused and "File too large" in refused
        # from now on persistent sends are refused at once, with the reason...
        again = producer.receipt("SEND", {"destination": dest, "persistent": "true"}, body)
        assert again.command == "ERROR"
        assert again.headers["message"].startswith("Persistent messages are refused: the store")
        # ... while non-persistent ones, consumers and the connection keep working
        other = "/queue/" + unique("mem")
        assert producer.receipt("SEND", {"destination": other}, b"np").command == "RECEIPT"
        consumer = RawStomp(broker.port)
        consumer.connect()
        consumer.send("SUBSCRIBE", {"destination": other, "id": "1"})
        assert consumer.recv_command("MESSAGE").body == b"np"
        assert "cannot write" in broker.log()
        # room again: the broker notices by itself and takes persistent messages again
        _limit_file_size(broker.proc.pid, resource.RLIM_INFINITY)

        def accepted():
            frame = producer.receipt("SEND", {"destination": dest, "persistent": "true",
                                              "n": "after"}, body)
            return frame.command == "RECEIPT"
        assert wait_until(accepted, timeout=10, interval=0.2)
        assert "writes again" in broker.log()
        producer.close()
        consumer.close()
        # what a consumer gets: the receipted messages only (the one whose write failed was
        # taken back, its sender having been told), in order
        expected = [str(n) for n in receipted] + ["after"]
        assert _drain(broker, dest, ack="client") == expected
        # a crash now: every receipted message is there, exactly once, and in order
        broker.kill()
        broker = broker.restarted().start()
        assert _drain(broker, dest) == expected  # refused attempts left nothing behind
    finally:
        broker.stop()


def test_each_send_without_receipt_that_the_store_fails_gets_its_own_error(tmp_path):
    """Sends without receipts are answered only when they fail: one ERROR for each of them
    that was not stored, before the answer to a later frame, and none for those that were."""
    broker = BrokerProcess(directory=str(tmp_path)).start()
    try:
        producer = RawStomp(broker.port)
        producer.connect()
        dest = "/queue/" + unique("lazy")
        assert producer.receipt("SEND", {"destination": dest, "persistent": "true"},
                                b"first").command == "RECEIPT"
        segment = max(glob.glob(os.path.join(broker.store_dir, "db-*.log")), key=_data_size)
        _limit_file_size(broker.proc.pid, _data_size(segment) + 128 * 1024)
        sends = 60
        body = b"z" * 16 * 1024  # 960 KiB in all: most cannot be written
        producer.send_raw(b"".join(
            serialize("SEND", {"destination": dest, "persistent": "true", "n": str(n)}, body,
                      "1.2") for n in range(sends)))
        last = producer.receipt("SEND", {"destination": "/queue/" + unique("np")}, b"np")
        assert last.command == "RECEIPT"  # non-persistent: stored nowhere, and done
        errors = producer.backlog
        assert errors and all(f.command == "ERROR" and "receipt-id" not in f.headers
                              for f in errors), errors
        assert any("could not store" in f.headers["message"] for f in errors)
        _limit_file_size(broker.proc.pid, resource.RLIM_INFINITY)
        assert wait_until(lambda: producer.receipt(
            "SEND", {"destination": dest, "persistent": "true", "n": "after"},
            b"a").command == "RECEIPT", timeout=10, interval=0.2)
        producer.close()
        got = _drain(broker, dest)
        assert got[0] is None and got[-1] == "after"  # "first" has no n
        stored = [int(n) for n in got[1:-1]]
        # each send was either stored (once, in order) or refused with an ERROR of its own;
        # which ones depends on how they were batched (a batch that fails fails as a whole,
        # and a later, smaller one may fit once the store has recovered)
        assert stored == sorted(set(stored)) and set(stored) <= set(range(sends))
        assert len(stored) < sends and len(errors) == sends - len(stored)
    finally:
        broker.stop()


def test_each_ack_of_a_run_the_store_fails_to_write_gets_its_own_error(tmp_path):
    """ACKs without receipts read together are written together: if that write fails, each
    of them is told, and the messages stay the store's (a restart brings them back)."""
    broker = BrokerProcess(directory=str(tmp_path)).start()
    try:
        dest = "/queue/" + unique("acked")
        producer = RawStomp(broker.port)
        producer.connect()
        for n in range(3):
            assert producer.receipt("SEND", {"destination": dest, "persistent": "true",
                                             "n": str(n)}, b"m").command == "RECEIPT"
        consumer = RawStomp(broker.port)
        consumer.connect()
        consumer.receipt("SUBSCRIBE", {"destination": dest, "id": "1",
                                       "ack": "client-individual"})
        ids = [consumer.recv_command("MESSAGE").headers["ack"] for _ in range(3)]
        segment = max(glob.glob(os.path.join(broker.store_dir, "db-*.log")), key=_data_size)
        _limit_file_size(broker.proc.pid, _data_size(segment) + 16 * 1024)
        # the three removals and a send too big for the room left arrive in one read, and
        # reach the store together
        consumer.send_raw(b"".join(
            [serialize("ACK", {"id": i}, b"", "1.2") for i in ids]
            + [serialize("SEND", {"destination": "/queue/" + unique("big"),
                                  "persistent": "true"}, b"b" * 48 * 1024, "1.2")]))
        assert consumer.receipt("SEND", {"destination": "/queue/" + unique("np")},
                                b"np").command == "RECEIPT"
        errors = consumer.backlog
        assert len(errors) == 4, errors  # three ACKs and the SEND
        assert all(f.command == "ERROR" and "could not store" in f.headers["message"]
                   for f in errors)
        consumer.close()
        # not acked after all: the store still holds them, and a restart brings them back
        broker.kill()
        broker = broker.restarted().start()
        assert _drain(broker, dest) == ["0", "1", "2"]
    finally:
        broker.stop()


def _drain(broker, dest, ack="auto"):
    c = RawStomp(broker.port)
    c.connect()
    c.send("SUBSCRIBE", {"destination": dest, "id": "1", "ack": ack})
    got = [frame.headers.get("n") for frame in c.until_quiet()]
    c.close()
    return got
