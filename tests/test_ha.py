"""Shared-directory master/slave with real twistd processes killed with SIGKILL."""

import json
import os
import threading
import time

import pytest

from support import (RawStomp, shared_dir_brokers, start_master_and_slaves, unique,
                     wait_until)


def the_master(brokers, timeout=5.0):
    """The one broker that accepts connections (a probe may miss on a loaded machine: retry)."""
    found = []
    assert wait_until(lambda: found.extend(b for b in brokers if b.accepts()) or found, timeout)
    assert len(set(found)) == 1, found
    return found[0]


def test_slave_waits_with_ports_closed_then_takes_over(tmp_path):
    a, b = start_master_and_slaves(shared_dir_brokers(tmp_path))
    try:
        b.wait_for_log(r"slave: waiting for the lock on .*/shared/lock held by b0 \(pid %d"
                       % a.proc.pid)
        assert the_master([a, b]) is a
        assert "journal" not in b.log()  # a slave has not opened the store
        started = time.monotonic()
        a.kill()
        assert wait_until(b.accepts, timeout=5, interval=0.005)
        takeover = time.monotonic() - started
        print("takeover after SIGKILL: %.3f s" % takeover)
        assert takeover < 1.0
        a = a.restarted()
        a.start(wait=False)
        a.wait_for_log("slave: waiting for the lock")
        assert not a.accepts()
    finally:
        a.kill()
        b.kill()


def test_slave_stops_promptly_on_sigterm(tmp_path):
    a, b = start_master_and_slaves(shared_dir_brokers(tmp_path))
    try:
        started = time.monotonic()
        b.stop(timeout=5)
        assert time.monotonic() - started < 3
        assert b.proc.returncode in (0, -15)
    finally:
        a.kill()
        b.kill()


def test_clean_stop_hands_over_after_store_is_closed(tmp_path):
    a, b = start_master_and_slaves(shared_dir_brokers(tmp_path))
    try:
        c = RawStomp(a.port)
        c.connect()
        dest = "/queue/" + unique()
        c.receipt("SEND", {"destination": dest, "persistent": "true"}, b"handed over")
        a.stop()
        assert wait_until(b.accepts, timeout=5)
        c = RawStomp(b.fixed_port)
        c.connect()
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
        assert c.recv_command("MESSAGE").body == b"handed over"
        # the journal was checkpointed on close: the new master replayed nothing
        assert "(0 batches replayed" in b.log()
    finally:
        a.kill()
        b.kill()


@pytest.mark.parametrize("how", ["delete", "replace"])
def test_master_that_loses_its_lock_file_stops(tmp_path, how):
    (a,) = start_master_and_slaves(shared_dir_brokers(tmp_path, n=1))
    try:
        lock = os.path.join(a.store_dir, "lock")
        if how == "delete":
            os.unlink(lock)
        else:
            with open(lock + ".new", "w") as f:
                f.write("{}")
            os.replace(lock + ".new", lock)
        a.proc.wait(timeout=5)  # lock-check is 0.2 s: two checks are well inside this
        assert a.proc.returncode != 0
        assert "lost the lock" in a.log()
    finally:
        a.kill()


def test_three_brokers_never_two_masters(tmp_path):
    brokers = start_master_and_slaves(shared_dir_brokers(tmp_path, n=3))
    masters_seen = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            masters_seen.append(sum(1 for b in brokers if b.accepts()))
            # probes paced a little, so they do not fill the master's accept backlog
            stop.wait(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for round in range(4):
            master = the_master(brokers)
            master.kill()
            assert wait_until(lambda: any(b.accepts() for b in brokers if b is not master), 5)
            fresh = master.restarted()
            brokers[brokers.index(master)] = fresh
            fresh.start(wait=False)
            fresh.wait_for_log("slave: waiting")
    finally:
        stop.set()
        watcher.join()
        for b in brokers:
            b.kill()
    assert max(masters_seen) == 1
    assert len(masters_seen) > 50


class FailoverClient:
    """Just enough failover for the test: reconnect to whichever broker accepts."""

    def __init__(self, ports):
        self.ports = ports
        self.c = None

    def connection(self):
        while self.c is None:
            for port in self.ports:
                try:
                    c = RawStomp(port)
                    c.sock.settimeout(5)
                    c.connect()
                    self.c = c
                    self.on_connect(c)
                    break
                except (OSError, AssertionError, TimeoutError):
                    continue
            else:
                time.sleep(0.02)
        return self.c

    def on_connect(self, c):
        pass

    def broken(self):
        if self.c is not None:
            self.c.close()
        self.c = None


@pytest.mark.parametrize("store", ["kahadb", "leveldb", "lmdb"])
def test_no_receipted_message_lost_across_five_failovers(tmp_path, store):
    brokers = start_master_and_slaves(shared_dir_brokers(tmp_path, "--store=%s" % store))
    ports = [b.fixed_port for b in brokers]
    dest = "/queue/" + unique()
    receipted, received = [], []
    producing = threading.Event()
    producing.set()

    def produce():
        fc = FailoverClient(ports)
        i = 0
        while producing.is_set():
            body = b"%06d" % i
            try:
                frame = fc.connection().receipt(
                    "SEND", {"destination": dest, "persistent": "true"}, body, timeout=5)
                if frame.command == "RECEIPT":
                    receipted.append(body)
                    i += 1
            except (OSError, TimeoutError, AssertionError):
                fc.broken()  # resend the same body on the new master

    class Consumer(FailoverClient):
        def on_connect(self, c):
            c.receipt("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client-individual"})

    consuming = threading.Event()
    consuming.set()

    def consume():
        fc = Consumer(ports)
        while consuming.is_set():
            try:
                c = fc.connection()
                m = c.recv(0.5)
                if m.command == "MESSAGE":
                    # delivered is what counts; the ACK may be applied even if its receipt is
                    # lost to the kill, and then the message rightly never comes back
                    received.append(m.body)
                    c.receipt("ACK", {"id": m.headers["ack"]})
            except TimeoutError:
                if fc.c is not None and fc.c.closed:
                    fc.broken()
            except (OSError, AssertionError):
                fc.broken()

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    try:
        for failover in range(5):
            wait_until(lambda: len(receipted) > 50 * (failover + 1), timeout=10)
            master = the_master(brokers, timeout=10)
            master.kill()
            fresh = master.restarted()
            brokers[brokers.index(master)] = fresh
            fresh.start(wait=False)
            fresh.wait_for_log("slave: waiting|STOMP listening")
        producing.clear()
        threads[0].join(30)
        assert wait_until(lambda: set(receipted) <= set(received), timeout=20), \
            "lost: %d" % len(set(receipted) - set(received))
    finally:
        producing.clear()
        consuming.clear()
        for t in threads:
            t.join(30)
        for b in brokers:
            b.kill()
    duplicates = len(received) - len(set(received))
    print("%s: %d receipted, %d received, %d duplicates, 0 lost"
          % (store, len(receipted), len(received), duplicates))
    assert len(receipted) > 250


def test_lease_locker_takeover_after_expiry(tmp_path):
    a, b = start_master_and_slaves(shared_dir_brokers(tmp_path, "--locker=lease", "--lease-duration=2", "--lock-retry=0.05"))
    try:
        b.wait_for_log("slave: waiting for the lease")
        with open(os.path.join(a.store_dir, "lease")) as f:
            expires = json.load(f)["expires"]
        a.kill()
        assert wait_until(b.accepts, timeout=10, interval=0.01)
        assert time.time() >= expires  # never before the dead master's lease ran out
    finally:
        a.kill()
        b.kill()


def test_lease_master_that_cannot_renew_stops_before_expiry(tmp_path):
    (a,) = start_master_and_slaves(shared_dir_brokers(tmp_path, "--locker=lease", "--lease-duration=3", "--lock-retry=0.05", n=1))
    try:
        lease = os.path.join(a.store_dir, "lease")
        with open(lease) as f:
            expires = json.load(f)["expires"]
        os.unlink(lease)
        os.mkdir(lease)  # renewals now fail: rename onto a directory is refused (even for root)
        a.proc.wait(timeout=10)
        stopped = time.time()
        assert "lost the lock" in a.log()
        assert stopped < expires  # gone before a slave could take the expired lease
    finally:
        a.kill()


def test_stomp_py_host_list_follows_the_master(tmp_path):
    import stomp

    a, b = start_master_and_slaves(shared_dir_brokers(tmp_path))
    dest = "/queue/" + unique()
    received = []
    reconnected = threading.Event()
    over = threading.Event()  # the test is done: the brokers are gone, stop reconnecting

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame):
            received.append(frame.body)

        def on_disconnected(self):
            # what stomp.py's docs tell applications to do: connect again (it walks the host
            # list) and subscribe again
            def again():
                while not over.is_set():
                    try:
                        conn.connect(wait=True)
                        conn.subscribe(dest, id="1", ack="auto")
                    except (stomp.exception.StompException, OSError):
                        continue  # the socket broke meanwhile: walk the list again
                    reconnected.set()
                    return
            threading.Thread(target=again, daemon=True).start()

    conn = stomp.Connection12([("127.0.0.1", a.fixed_port), ("127.0.0.1", b.fixed_port)],
                              reconnect_sleep_initial=0.05, reconnect_sleep_increase=0.5,
                              reconnect_sleep_max=0.5, reconnect_attempts_max=100)
    conn.set_listener("l", Listener())
    try:
        conn.connect(wait=True)
        conn.subscribe(dest, id="1", ack="auto")
        c = RawStomp(a.port)
        c.connect()
        c.receipt("SEND", {"destination": dest, "persistent": "true"}, b"before")
        assert wait_until(lambda: received == ["before"], 5)
        a.kill()
        assert reconnected.wait(10)
        c = RawStomp(b.fixed_port)
        c.connect()
        c.receipt("SEND", {"destination": dest, "persistent": "true"}, b"after")
        assert wait_until(lambda: received == ["before", "after"], 5), received
    finally:
        over.set()
        try:
            conn.disconnect()
        except Exception:
            pass
        a.kill()
        b.kill()
