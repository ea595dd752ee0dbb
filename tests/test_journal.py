"""The journal store's own promises: torn tails, corruption, checkpoints, GC, compaction."""

import glob
import os

import pytest_twisted
from twisted.internet import defer

from pybrokerd.broker.destination import QUEUE, Destination
from pybrokerd.broker.message import Message
from stores.journal import JournalAdapter


def msg(i, size=100):
    return Message("ID:j-%d" % i, Destination(QUEUE, "q"), bytes([i % 256]) * size, persistent=True)


@defer.inlineCallbacks
def opened(path, **kw):
    adapter = JournalAdapter(str(path), **kw)
    yield adapter.open()
    return adapter


def segments(path):
    return sorted(glob.glob(os.path.join(str(path), "db-*.log")))


@defer.inlineCallbacks
def ids_after_reopen(path, **kw):
    adapter = yield opened(path, **kw)
    got = yield adapter.queue_store("q").recover(100000)
    yield adapter.close()
    return [m.message_id for m in got]


@pytest_twisted.inlineCallbacks
def test_torn_tail_is_cut_at_last_good_batch(tmp_path):
    a = yield opened(tmp_path)
    for i in range(5):
        yield a.queue_store("q").add(msg(i))
    yield a.close()
    os.unlink(tmp_path / "checkpoint")  # force a replay of the journal
    (seg,) = segments(tmp_path)
    size = os.path.getsize(seg)
    with open(seg, "r+b") as f:
        f.truncate(size - 7)  # the last batch loses its end
    assert (yield ids_after_reopen(tmp_path)) == ["ID:j-%d" % i for i in range(4)]
    assert os.path.getsize(seg) < size - 7  # the torn batch was cut off
    # and the journal is writable again after the cut
    a = yield opened(tmp_path)
    yield a.queue_store("q").add(msg(9))
    yield a.close()
    assert (yield ids_after_reopen(tmp_path))[-1] == "ID:j-9"


@pytest_twisted.inlineCallbacks
def test_corrupted_tail_batch_is_dropped(tmp_path):
    a = yield opened(tmp_path)
    for i in range(3):
        yield a.queue_store("q").add(msg(i))
    yield a.close()
    os.unlink(tmp_path / "checkpoint")
    (seg,) = segments(tmp_path)
    with open(seg, "r+b") as f:
        f.seek(os.path.getsize(seg) - 30)
        f.write(b"\xde\xad\xbe\xef")  # flip bytes inside the last batch's payload
    assert (yield ids_after_reopen(tmp_path)) == ["ID:j-0", "ID:j-1"]


@pytest_twisted.inlineCallbacks
def test_garbage_after_last_batch_is_ignored(tmp_path):
    a = yield opened(tmp_path)
    yield a.queue_store("q").add(msg(1))
    yield a.close()
    (seg,) = segments(tmp_path)
    with open(seg, "ab") as f:
        f.write(b"\x00" * 4096)  # a preallocated / zero-filled tail
    assert (yield ids_after_reopen(tmp_path)) == ["ID:j-1"]


@pytest_twisted.inlineCallbacks
def test_recovery_uses_checkpoint_plus_tail(tmp_path):
    a = yield opened(tmp_path)
    store = a.queue_store("q")
    for i in range(10):
        yield store.add(msg(i))
    yield a.checkpoint()
    yield store.add(msg(10))  # after the checkpoint: found by replaying the tail
    yield store.remove("ID:j-0")
    # crash: no clean close, so no final checkpoint
    a._stopping = True
    a._thread = None
    os.fsync(a._fd)
    assert (yield ids_after_reopen(tmp_path)) == ["ID:j-%d" % i for i in range(1, 11)]


@pytest_twisted.inlineCallbacks
def test_gc_deletes_drained_segments(tmp_path):
    a = yield opened(tmp_path, max_file_length=64 * 1024, checkpoint_bytes=1)
    store = a.queue_store("q")
    for i in range(500):  # one at a time: small batches spread over many segments
        yield store.add(msg(i, 1000))
    assert len(segments(tmp_path)) > 5
    yield defer.gatherResults([store.remove("ID:j-%d" % i) for i in range(500)])
    yield a.checkpoint()
    yield store.add(msg(999))  # a batch after the checkpoint op lets maintenance run
    assert len(segments(tmp_path)) <= 2
    yield a.close()
    assert (yield ids_after_reopen(tmp_path)) == ["ID:j-999"]


@pytest_twisted.inlineCallbacks
def test_one_old_message_does_not_pin_its_segment(tmp_path):
    a = yield opened(tmp_path, max_file_length=64 * 1024, checkpoint_bytes=1)
    store = a.queue_store("q")
    yield store.add(msg(0, 1000))  # the long-lived one, in the first segment
    for i in range(1, 500):
        yield store.add(msg(i, 1000))
    yield defer.gatherResults([store.remove("ID:j-%d" % i) for i in range(1, 500)])
    for i in range(3):
        yield a.checkpoint()
        yield store.add(msg(1000 + i))
    first = os.path.join(str(tmp_path), "db-1.log")
    assert not os.path.exists(first)
    assert a.size() < 200 * 1024
    yield a.close()
    assert (yield ids_after_reopen(tmp_path)) == ["ID:j-0", "ID:j-1000", "ID:j-1001", "ID:j-1002"]


@pytest_twisted.inlineCallbacks
def test_messages_read_back_in_runs_are_each_whole(tmp_path):
    # neighbours in the journal are read with one pread per run: across segment ends, over
    # the holes removed messages leave, and with runs longer than one read may span
    a = yield opened(tmp_path, max_file_length=256 * 1024)
    store = a.queue_store("q")
    sizes = {i: (i * 7919) % 9000 + 1 for i in range(400)}
    batch = []
    for i in range(400):
        batch.append(store.add(msg(i, sizes[i])))
        if i % 25 == 24:  # batches of 25: long runs of neighbours
            yield defer.gatherResults(batch)
            batch = []
    assert len(segments(tmp_path)) > 3
    removed = {i for i in range(400) if i % 3 == 0 or 100 <= i < 130}
    yield defer.gatherResults([store.remove("ID:j-%d" % i) for i in sorted(removed)])
    kept = [i for i in range(400) if i not in removed]
    for window in (1, 7, 1000):
        got, after = [], None
        while True:
            messages = yield store.recover(window, after=after)
            if not messages:
                break
            got.extend(messages)
            after = messages[-1].message_id
        assert [m.message_id for m in got] == ["ID:j-%d" % i for i in kept]
        assert [m.body for m in got] == [bytes([i % 256]) * sizes[i] for i in kept]
    yield a.close()
