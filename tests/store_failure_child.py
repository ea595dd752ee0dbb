"""Run by test_store_failure.py in a child process: a real store hits a real write error.

The child lowers its own RLIMIT_FSIZE (SIGXFSZ ignored, as Python does by default), so the
kernel refuses to grow the store's files with EFBIG, exactly where a full disk would refuse
with ENOSPC.  Then it raises the limit again, as an operator freeing space would, and checks
that the store recovers by itself and that a reopen finds exactly what was acknowledged.

usage: python store_failure_child.py KIND DIRECTORY
"""

import resource
import signal
import sys

from twisted.internet import defer, task

from pybrokerd.broker.destination import QUEUE, Destination
from pybrokerd.broker.message import Message
from stores import registry
from stores.batching import StoreWriteError

BODY = b"b" * 1024


def message(i):
    return Message("ID:f-%d" % i, Destination(QUEUE, "q"), BODY, persistent=True)


def check(condition, what):
    if not condition:
        raise AssertionError(what)


@defer.inlineCallbacks
def until(reactor, predicate, timeout=10.0):
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        yield task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("timed out")


@defer.inlineCallbacks
def main(reactor, kind, directory):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    adapter = registry.load(kind)(directory, reactor=reactor)
    adapter.retry_interval = 0.1
    yield adapter.open()
    store = adapter.queue_store("q")
    yield store.add(message(0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, resource.RLIM_INFINITY))
    # fill until a batch fails: every batch before it was acknowledged
    acked, failed_batch = [0], None
    for b in range(1, 400):
        ids = list(range(b * 10, b * 10 + 10))
        try:
            yield adapter.transaction([("add", store, message(i)) for i in ids])
        except StoreWriteError as e:
            failed_batch = ids
            check("File too large" in str(e) or "Input/output" in str(e) or "IO error" in str(e),
                  "the error names the cause: %s" % e)
            break
        acked += ids
    check(failed_batch is not None, "the file size limit never failed a write")
    check(adapter.failure is not None, "the adapter says it is failing")
    # the failed adds are not in the catalogue; the acknowledged ones are
    listed = yield store.recover(100000)
    check([m.message_id for m in listed] == ["ID:f-%d" % i for i in acked],
          "after the failure the store lists exactly the acknowledged messages")
    check(adapter.stored_bytes() == len(acked) * len(BODY), "stored bytes follow")
    # an ack (remove) while failing is kept and written once the store recovers
    # an ack (remove) while failing either is written (a small batch may fit) or fails as a
    # whole and the messages stay the store's: never half of it
    removed = acked[:5]
    outcome = []
    removing = adapter.transaction([("remove", store, "ID:f-%d" % i) for i in removed])
    removing.addCallbacks(lambda _: outcome.append("written"),
                          lambda f: (f.trap(StoreWriteError), outcome.append("failed")))
    yield until(reactor, lambda: outcome)
    if outcome == ["failed"]:
        listed = yield store.recover(100000)
        check(len(listed) == len(acked), "a failed remove leaves its messages in the store")
        removed = []
    # (whether the store can write again under the same limit depends on the backend: a
    # fresh LevelDB log file has room, a journal segment at the limit has none)
    # room again: the probe notices, writes work again
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    yield until(reactor, lambda: adapter.failure is None)
    yield adapter.transaction([("add", store, message(i)) for i in range(9000, 9010)])
    acked += list(range(9000, 9010))
    yield adapter.close()
    adapter = registry.load(kind)(directory, reactor=reactor)
    yield adapter.open()
    listed = yield adapter.queue_store("q").recover(100000)
    expected = [i for i in acked if i not in removed]
    check([m.message_id for m in listed] == ["ID:f-%d" % i for i in expected],
          "after a reopen: exactly the acknowledged messages, minus the acks that were written "
          "(got %d, expected %d; missing %s, extra %s)" % (
              len(listed), len(expected),
              sorted(set(expected) - {int(m.message_id[5:]) for m in listed})[:20],
              sorted({int(m.message_id[5:]) for m in listed} - set(expected))[:20]))
    check(all(m.body == BODY for m in listed), "bodies intact")
    yield adapter.close()
    print("ok", len(acked), "acked", file=sys.stderr)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
