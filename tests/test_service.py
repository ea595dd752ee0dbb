"""The twistd plugin: options, start-up, config file, several brokers side by side."""

import os
import subprocess

import pytest

from support import TWISTD, BrokerProcess, RawStomp, unique


def twistd(*args, cwd=None):
    return subprocess.run([TWISTD, "-n", "--pidfile=", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_help_lists_every_option():
    out = twistd("pybrokerd", "--help").stdout
    for option in ("--store", "--dir", "--data-dir", "--scheduler-dir", "--stomp", "--amqp",
                   "--openwire", "--admin", "--broker-name", "--config"):
        assert option in out


def test_unknown_store_is_refused():
    result = twistd("pybrokerd", "--store=nosuch")
    assert result.returncode != 0
    assert "nosuch" in result.stdout + result.stderr


def test_port_in_use_fails_with_non_zero_exit(broker, tmp_path):
    result = twistd("--logfile=%s" % (tmp_path / "log"), "pybrokerd", "--dir=%s" % tmp_path,
                    "--stomp=tcp:%d:interface=127.0.0.1" % broker.port)
    assert result.returncode != 0
    assert "failed to start" in (tmp_path / "log").read_text()


def test_two_brokers_from_one_working_directory(tmp_path):
    a = BrokerProcess(directory=str(tmp_path)).start()
    b = BrokerProcess("--broker-name=b", directory=str(tmp_path))
    b.args.append("--dir=%s" % (tmp_path / "other"))
    b.start()
    try:
        for proc in (a, b):
            c = RawStomp(proc.port)
            assert c.connect().command == "CONNECTED"
            c.close()
        assert a.port != b.port
    finally:
        a.stop()
        b.stop()


def test_config_file(tmp_path):
    config = tmp_path / "broker.ini"
    config.write_text("[pybrokerd]\nmax-redeliveries = 1\nbroker-name = fromfile\n")
    proc = BrokerProcess("--config=%s" % config).start()
    try:
        assert "broker=fromfile" in proc.log()
        dest = "/queue/" + unique()
        p = RawStomp(proc.port)
        p.connect()
        p.receipt("SEND", {"destination": dest, "persistent": "true"}, b"x")
        for _ in range(2):  # delivered, then redelivered once; the next return exceeds 1
            c = RawStomp(proc.port)
            c.connect()
            c.receipt("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client"})
            c.recv_command("MESSAGE")
            c.close()
        dlq = RawStomp(proc.port)
        dlq.connect()
        dlq.receipt("SUBSCRIBE", {"destination": "/queue/ActiveMQ.DLQ", "id": "d"})
        m = dlq.recv_command("MESSAGE")
        assert m.headers["original-destination"] == dest
        c = RawStomp(proc.port)
        c.connect()
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
        assert c.maybe_recv(0.3) is None
    finally:
        proc.stop()


def test_bad_config_file_is_refused(tmp_path):
    config = tmp_path / "broker.ini"
    config.write_text("[pybrokerd]\nno-such-option = 1\n")
    result = twistd("pybrokerd", "--config=%s" % config)
    assert result.returncode != 0
    assert "no-such-option" in result.stdout + result.stderr


def test_prioritized_messages_option():
    proc = BrokerProcess("--prioritized-messages").start()
    try:
        dest = "/queue/" + unique()
        p = RawStomp(proc.port)
        p.connect()
        for prio in ("1", "9", "4"):
            p.receipt("SEND", {"destination": dest, "priority": prio}, prio.encode())
        c = RawStomp(proc.port)
        c.connect()
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
        assert [c.recv_command("MESSAGE").body for _ in range(3)] == [b"9", b"4", b"1"]
    finally:
        proc.stop()


def test_sigterm_stops_promptly(tmp_path):
    proc = BrokerProcess(directory=str(tmp_path)).start()
    proc.stop(timeout=10)
    assert proc.proc.returncode in (0, -15)  # twistd exits by re-raising SIGTERM
    assert "pybrokerd stopped" in proc.log()
    assert os.path.isdir(tmp_path / "store")


def test_sigterm_closes_client_connections_cleanly_after_their_receipts(tmp_path):
    """As ActiveMQ: a stop ends each STOMP connection with a FIN after what it owes (a
    RECEIPT still waiting for the disk), not a reset that could lose it."""
    import socket
    proc = BrokerProcess(directory=str(tmp_path)).start()
    try:
        c = RawStomp(proc.port)
        c.connect()
        assert c.receipt("SEND", {"destination": "/queue/" + unique(), "persistent": "true"},
                         b"x").command == "RECEIPT"
        idle = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
        idle.sendall(b"CONNECT\naccept-version:1.2\n\n\x00")
        assert idle.recv(4096).startswith(b"CONNECTED")
        proc.stop(timeout=10)
        assert idle.recv(4096) == b""  # a clean end of stream; a reset raises here
        idle.close()
    finally:
        proc.kill()


def test_foreground_brokers_need_no_pidfile_option(tmp_path):
    """`twistd -n pybrokerd` twice in one directory: no twistd.pid gets in the way."""
    procs = []
    try:
        for name in ("a", "b"):
            procs.append(subprocess.Popen(
                [TWISTD, "-n", "--logfile=%s.log" % name, "pybrokerd", "--dir=shared",
                 "--broker-name=%s" % name, "--stomp=tcp:0:interface=127.0.0.1",
                 "--amqp=tcp:0:interface=127.0.0.1", "--admin=tcp:0:interface=127.0.0.1"],
                cwd=str(tmp_path)))
        from support import wait_until

        def roles():
            text = "".join((tmp_path / n).read_text() for n in ("a.log", "b.log")
                           if (tmp_path / n).exists())
            return "slave: waiting" in text and "STOMP listening" in text
        assert wait_until(roles, 20)  # either may win the lock: one master, one slave
        assert not (tmp_path / "twistd.pid").exists()
        assert all(p.poll() is None for p in procs)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_json_logs(tmp_path):
    import json
    proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "--logger=pybrokerd.logs.json_stdout",
                             "pybrokerd", "--dir=%s" % tmp_path, "--stomp=tcp:0",
                             "--amqp=none", "--admin=none"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        records = []
        for raw in proc.stdout:
            for chunk in raw.decode().split("\x1e"):
                if chunk.strip():
                    records.append(json.loads(chunk))
            if any(r.get("label") == "STOMP" for r in records):
                break
        started = [r for r in records if r.get("log_format", "").startswith("pybrokerd {version}")]
        assert started and started[0]["store"] == "kahadb"  # structured fields, not only text
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_second_broker_on_one_host_skips_default_listeners_it_cannot_have(tmp_path):
    """Started with only its own STOMP port (and dir), as one would start a second ActiveMQ:
    the default AMQP and admin ports are the first broker's, and that is not fatal."""
    import socket as sockets
    taken = []
    for port in (5672, 8161):
        s = sockets.socket()
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
            taken.append(s)
        except OSError:
            s.close()  # taken already by someone else: just as good for this test
    try:
        proc2 = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "--logfile=%s" % (tmp_path / "log"), "pybrokerd",
             "--dir=%s" % (tmp_path / "store"), "--stomp=tcp:0:interface=127.0.0.1"])
        from support import wait_until
        assert wait_until(lambda: (tmp_path / "log").exists()
                          and "AMQP listener" in (tmp_path / "log").read_text(), 30)
        text = (tmp_path / "log").read_text()
        assert "AMQP listener not started" in text and "admin HTTP listener not started" in text
        assert proc2.poll() is None  # still running
        proc2.terminate()
        proc2.wait(15)
        # asked for explicitly, a taken port is an error, as for STOMP
        result = twistd("--logfile=%s" % (tmp_path / "log2"), "pybrokerd",
                        "--dir=%s" % (tmp_path / "store2"), "--stomp=tcp:0:interface=127.0.0.1",
                        "--amqp=tcp:5672:interface=127.0.0.1:backlog=5")
        assert result.returncode != 0
    finally:
        for s in taken:
            s.close()
