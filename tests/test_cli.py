"""`pybroker`, the command-line tool, end to end: real subprocesses against a real broker."""

import json
import os
import subprocess
import sys

import pytest

from support import free_port, unique

PYBROKER = os.path.join(os.path.dirname(sys.executable), "pybroker")


def run(broker, *args, input=None, url=None, timeout=60):
    env = dict(os.environ)
    env["PYBROKER_URL"] = url or "tcp://127.0.0.1:%d" % broker.port
    return subprocess.run([PYBROKER, *args], input=input, capture_output=True, env=env,
                          timeout=timeout)


def test_send_arguments_receive_prints_one_per_line_and_acks(broker):
    dest = "/queue/" + unique()
    r = run(broker, "send", dest, "one", "two", "three", "--persistent")
    assert r.returncode == 0, r.stderr
    assert b"sent 3 messages" in r.stderr
    r = run(broker, "receive", dest, "--count", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"one\ntwo\n"
    # acked after printing: only the third is left
    r = run(broker, "receive", dest, "--count", "1", "--timeout", "10")
    assert r.stdout == b"three\n"


def test_send_stdin_and_file_one_message_per_line(broker, tmp_path):
    dest = "/queue/" + unique()
    lines = b"".join(b"line %d\n" % i for i in range(1000))
    r = run(broker, "send", "-p", dest, input=lines)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "bodies.txt"
    path.write_bytes(b"from file 1\nfrom file 2\n")
    assert run(broker, "send", dest, "--file", str(path)).returncode == 0
    r = run(broker, "receive", dest, "--count", "1002", "--prefetch", "100")
    assert r.returncode == 0, r.stderr
    assert r.stdout == lines + b"from file 1\nfrom file 2\n"
    assert b"received 1002 messages" in r.stderr
    assert b"\r" not in r.stderr  # piped: plain lines, no progress bar


def test_send_count_headers_and_options_after_bodies(broker):
    dest = "/queue/" + unique()
    r = run(broker, "send", dest, "x", "--count", "3", "--header", "color=red", "-p")
    assert r.returncode == 0, r.stderr
    r = run(broker, "receive", dest, "--count", "3", "--show-headers", "--selector", "color = 'red'")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[1::2] == [b"x", b"x", b"x"]
    headers = json.loads(out[0])
    assert headers["color"] == "red" and headers["persistent"] == "true"


def test_receive_timeout_exit_code(broker):
    r = run(broker, "receive", "/queue/" + unique(), "--count", "1", "--timeout", "0.3")
    assert r.returncode == 3
    assert r.stderr.strip().splitlines()[-1] == b"pybroker: timed out after 0.3 s with 0 of 1 messages"


def test_browse_leaves_messages(broker):
    dest = "/queue/" + unique()
    run(broker, "send", dest, "a", "b")
    r = run(broker, "browse", dest)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"a\nb\n" and b"2 messages" in r.stderr
    assert run(broker, "receive", dest, "--count", "2").stdout == b"a\nb\n"


def test_delay_and_scheduled_list_remove(broker):
    dest = "/queue/" + unique()
    assert run(broker, "send", dest, "later", "--delay", "600000").returncode == 0
    r = run(broker, "scheduled", "list")
    assert r.returncode == 0, r.stderr
    jobs = [json.loads(line) for line in r.stdout.splitlines()]
    mine = [j for j in jobs if j["destination"] == dest]
    assert len(mine) == 1 and mine[0]["body"] == "later"
    assert mine[0]["AMQ_SCHEDULED_DELAY"] == "600000"
    assert run(broker, "scheduled", "remove", mine[0]["id"]).returncode == 0
    r = run(broker, "scheduled", "list")
    assert mine[0]["id"] not in r.stdout.decode()


def test_cron_send_is_scheduled(broker):
    dest = "/queue/" + unique()
    assert run(broker, "send", dest, "tick", "--cron", "0 0 1 1 *").returncode == 0
    jobs = [json.loads(line) for line in run(broker, "scheduled", "list").stdout.splitlines()]
    mine = [j for j in jobs if j["destination"] == dest]
    assert mine and mine[0]["AMQ_SCHEDULED_CRON"] == "0 0 1 1 *"
    run(broker, "scheduled", "remove", mine[0]["id"])


@pytest.mark.parametrize("args, code, text", [
    (["send", "no-prefix", "x"], 2, "must start with /queue/ or /topic/"),
    (["send", "/queue/x", "x", "--header", "novalue"], 2, "expected name=value"),
    (["receive", "/queue/x", "--selector", "a =", "--count", "1"], 1,
     "the broker refused: Invalid selector"),
    (["send", "/queue/x", "x", "--url", "failover:(tcp://127.0.0.1:1)?bogus=1"], 2,
     "unknown failover option 'bogus'"),
])
def test_errors_are_one_clear_line_with_an_exit_code(broker, args, code, text):
    r = run(broker, *args)
    assert r.returncode == code, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and text in lines[0], lines
    assert "Traceback" not in r.stderr.decode()


def test_no_broker_is_exit_code_4(broker):
    r = run(broker, "send", "/queue/x", "x", url="tcp://127.0.0.1:%d" % free_port())
    assert r.returncode == 4
    assert b"could not connect" in r.stderr and b"Traceback" not in r.stderr


def test_send_refused_by_the_broker_is_exit_code_1(broker):
    r = run(broker, "send", "/queue/" + unique(), "x", "--header", "priority=high")
    assert r.returncode == 1
    assert r.stderr.decode().strip().splitlines() == [
        "pybroker: the broker refused: Invalid priority header 'high': expected an integer"]


def test_progress_bar_with_rate_on_a_terminal(broker):
    import pty
    dest = "/queue/" + unique()
    master, slave = pty.openpty()
    env = dict(os.environ, PYBROKER_URL="tcp://127.0.0.1:%d" % broker.port)
    proc = subprocess.Popen([PYBROKER, "send", dest, "x", "--count", "20000"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
                            env=env)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the pty closed with the process
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(60) == 0
    os.close(master)
    assert b"\rsent [" in seen and b"msg/s" in seen and b"20,000/20,000" in seen
    assert b"sent 20000 messages to " + dest.encode() in seen


def test_stat_shows_sizes_counts_and_consumers(broker):
    name = unique("stat")
    dest = "/queue/" + name
    run(broker, "send", dest, "a", "b", "c", "-p")
    run(broker, "receive", dest, "--count", "1")
    r = run(broker, "stat", name)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0].split() == ["destination", "size", "enqueued", "dequeued", "consumers"]
    assert lines[1].split() == [dest, "2", "3", "1", "0"]
    r = run(broker, "stat", name, "--json")
    [row] = json.loads(r.stdout)
    assert row["destinationName"] == "queue://" + name and row["size"] == 2


def test_stat_wildcard_and_topics(broker):
    prefix = unique("w")
    for leaf in ("a", "b"):
        run(broker, "send", "/queue/%s.%s" % (prefix, leaf), "x")
    run(broker, "send", "/topic/%s.t" % prefix, "x")
    r = run(broker, "stat", prefix + ".>")
    names = [line.split()[0] for line in r.stdout.decode().splitlines()[1:]]
    assert names == ["/queue/%s.a" % prefix, "/queue/%s.b" % prefix]
    r = run(broker, "stat", prefix + ".>", "--topics")
    names = [line.split()[0] for line in r.stdout.decode().splitlines()[1:]]
    assert "/topic/%s.t" % prefix in names and len(names) == 3


def test_purge(broker):
    dest = "/queue/" + unique()
    run(broker, "send", dest, "x", "--count", "5", "-p")
    r = run(broker, "purge", dest)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "purged 5 message(s) from %s" % dest
    assert run(broker, "receive", dest, "--count", "1", "--timeout", "0.3").returncode == 3
    r = run(broker, "purge", "/queue/" + unique("nope"))
    assert r.returncode == 1 and b"no such queue" in r.stderr
