"""Authentication and authorization (ActiveMQ's simple authentication plugin and
authorization entries): the rules in process, the behaviour over real STOMP connections."""

import configparser
import time

import pytest

from pybrokerd.options import Options
from pybrokerd.security import (ANONYMOUS, ConfigError, Principal, Security, SecurityError,
                                hash_password, verify_password)
from support import BrokerProcess, RawStomp, unique
from twisted.python import usage

FAST = dict(iterations=1000)  # tests need no expensive hashes


def security_from(text, anonymous=None):
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    return Security.from_ini(parser, anonymous=anonymous)


CONFIG = """
[pybrokerd]
store = memory

[users]
alice = {alice}
bob = {bob}
carol = {carol}

[groups]
admins = alice
producers = bob
consumers = carol

[authorization]
queue:> = read: admins; write: admins; admin: admins
queue:orders.> = read: consumers; write: producers; admin: producers
topic:prices.* = read: *; write: producers; admin: *
topic:ActiveMQ.> = read: admins; write: admins; admin: admins
temp = read: *; write: *; admin: *
""".format(alice=hash_password("alice-pw", **FAST), bob=hash_password("bob-pw", **FAST),
           carol=hash_password("carol-pw", **FAST))


# -- in process ------------------------------------------------------------------------------

def test_hashes_are_salted_and_verified_in_constant_time():
    # (a password the hash's base64 alphabet cannot spell by chance: "pw" could, 1 in ~70)
    secret = "my pw!"
    a, b = hash_password(secret, **FAST), hash_password(secret, **FAST)
    assert a != b and a.startswith("pbkdf2_sha256$1000$")
    assert verify_password(secret, a) and not verify_password("my pW!", a)
    assert secret not in a and "my pw" not in a


def test_authentication_rules():
    sec = security_from(CONFIG)
    assert sec.authenticate("alice", "alice-pw") == Principal("alice", frozenset(["admins"]))
    for login, passcode in [("alice", "wrong"), ("nobody", "x"), (None, None), ("", "")]:
        with pytest.raises(SecurityError) as e:
            sec.authenticate(login, passcode)
        assert str(e.value) == "User name [%s] or password is invalid." % (login or "")
    assert security_from(CONFIG, anonymous=True).authenticate(None, None) == ANONYMOUS
    assert Security().authenticate(None, None) == ANONYMOUS  # no users: anonymous is on


def test_authorization_is_the_union_of_matching_entries_and_denies_the_rest():
    sec = security_from(CONFIG)
    bob = Principal("bob", frozenset(["producers"]))
    alice = Principal("alice", frozenset(["admins"]))
    assert sec.allowed(bob, "write", "queue", "orders.eu")
    assert not sec.allowed(bob, "read", "queue", "orders.eu")
    assert sec.allowed(alice, "read", "queue", "orders.eu")      # queue:> matches too
    assert not sec.allowed(bob, "write", "queue", "invoices")
    assert sec.allowed(ANONYMOUS, "read", "topic", "prices.eur")  # "*": everyone
    assert not sec.allowed(bob, "write", "topic", "news")         # no entry: denied
    assert sec.allowed(bob, "write", "queue", "x", temporary=True)
    with pytest.raises(SecurityError) as e:
        sec.check(bob, "read", "queue", "orders.eu")
    assert str(e.value) == "User bob is not authorized to read from: queue://orders.eu"
    assert Security().allowed(ANONYMOUS, "admin", "queue", "anything")


@pytest.mark.parametrize("section, error", [
    ("[users]\nx = plaintext\n", "not a pbkdf2_sha256 hash"),
    ("[groups]\ng = ghost\n", "unknown user(s) ghost"),
    ("[authorization]\nqueues:> = read: a\n", "expected queue:<pattern>"),
    ("[authorization]\nqueue:> = read a\n", "expected 'read: groups"),
])
def test_config_errors_name_the_problem(section, error):
    with pytest.raises(ConfigError) as e:
        security_from(section)
    assert error in str(e.value)


def test_twistd_options_refuse_a_bad_security_section(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("[pybrokerd]\nstore = memory\n[users]\nx = plaintext\n")
    with pytest.raises(usage.UsageError) as e:
        Options().parseOptions(["--config", str(path)])
    assert "not a pbkdf2_sha256 hash" in str(e.value)


# -- over STOMP --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    work = tmp_path_factory.mktemp("secured")
    config = work / "broker.ini"
    config.write_text(CONFIG)
    broker = BrokerProcess("--config=%s" % config, directory=str(work)).start()
    yield broker
    broker.stop()


def login(broker, user, password, **headers):
    c = RawStomp(broker.port)
    c.send("CONNECT", dict({"accept-version": "1.2", "host": "localhost", "login": user,
                            "passcode": password}, **headers))
    return c, c.recv()


def test_wrong_or_missing_credentials_get_an_error_and_are_closed(secured):
    for user, password in [("alice", "nope"), ("mallory", "x")]:
        started = time.monotonic()
        c, reply = login(secured, user, password)
        assert reply.command == "ERROR"
        assert reply.headers["message"] == "User name [%s] or password is invalid." % user
        assert time.monotonic() - started >= 0.4  # slowed down
        c.wait_closed()
    c = RawStomp(secured.port)
    c.send("CONNECT", {"accept-version": "1.2", "host": "localhost"})
    assert c.recv().headers["message"] == "User name [] or password is invalid."
    c.wait_closed()


def test_permissions_per_destination_and_the_connection_stays_usable(secured):
    dest = "/queue/orders." + unique()
    bob, reply = login(secured, "bob", "bob-pw")
    assert reply.command == "CONNECTED"
    assert bob.receipt("SEND", {"destination": dest}, b"order 1").command == "RECEIPT"
    denied = bob.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    assert denied.command == "ERROR"
    assert denied.headers["message"] == "User bob is not authorized to read from: queue://%s" % dest[7:]
    denied = bob.receipt("SEND", {"destination": "/queue/invoices"}, b"x")
    assert denied.headers["message"] == "User bob is not authorized to write to: queue://invoices"
    assert bob.receipt("SEND", {"destination": dest}, b"order 2").command == "RECEIPT"
    carol, _ = login(secured, "carol", "carol-pw")
    carol.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    assert [carol.recv_command("MESSAGE").body for _ in range(2)] == [b"order 1", b"order 2"]
    denied = carol.receipt("SEND", {"destination": dest}, b"x")
    assert denied.headers["message"] == "User carol is not authorized to write to: queue://%s" % dest[7:]


def test_creating_a_queue_needs_admin(secured):
    carol, _ = login(secured, "carol", "carol-pw")
    name = "orders." + unique()
    denied = carol.receipt("SUBSCRIBE", {"destination": "/queue/" + name, "id": "1"})
    assert denied.headers["message"] == "User carol is not authorized to create: queue://" + name
    bob, _ = login(secured, "bob", "bob-pw")
    bob.receipt("SEND", {"destination": "/queue/" + name}, b"made by bob")
    assert carol.receipt("SUBSCRIBE", {"destination": "/queue/" + name, "id": "2"}).command == "RECEIPT"
    assert carol.recv_command("MESSAGE").body == b"made by bob"


def test_management_destinations_need_admin(secured):
    bob, _ = login(secured, "bob", "bob-pw")
    denied = bob.receipt("SEND", {"destination": "/topic/ActiveMQ.Scheduler.Management",
                                  "AMQ_SCHEDULER_ACTION": "REMOVEALL"}, b"")
    assert denied.command == "ERROR" and "not authorized" in denied.headers["message"]
    alice, _ = login(secured, "alice", "alice-pw")
    ok = alice.receipt("SEND", {"destination": "/topic/ActiveMQ.Scheduler.Management",
                                "AMQ_SCHEDULER_ACTION": "REMOVEALL"}, b"")
    assert ok.command == "RECEIPT"


def test_frames_sent_right_behind_connect_wait_for_the_verdict(secured):
    dest = "/queue/orders." + unique()
    c = RawStomp(secured.port)
    c.send_raw(b"CONNECT\naccept-version:1.2\nhost:localhost\nlogin:bob\npasscode:bob-pw\n\n\x00"
               b"SEND\ndestination:%s\nreceipt:r1\n\nfirst\x00" % dest.encode())
    assert c.recv().command == "CONNECTED"
    assert c.recv().headers["receipt-id"] == "r1"


def test_anonymous_flag_lets_clients_in_without_credentials(tmp_path):
    config = tmp_path / "broker.ini"
    config.write_text(CONFIG)
    broker = BrokerProcess("--config=%s" % config, "--anonymous", directory=str(tmp_path)).start()
    try:
        assert "anonymous clients allowed" in broker.log()
        c = RawStomp(broker.port)
        c.connect()
        # anonymous is only in the "*" entries
        assert c.receipt("SUBSCRIBE", {"destination": "/topic/prices.eur", "id": "1"}).command == "RECEIPT"
        denied = c.receipt("SEND", {"destination": "/queue/orders.x"}, b"x")
        assert denied.headers["message"] == \
            "User anonymous is not authorized to write to: queue://orders.x"
    finally:
        broker.stop()


def test_client_and_cli_use_credentials(secured):
    import os
    import subprocess
    import sys
    from pybrokerd.client import ConnectFailed, connect
    url = "failover:(tcp://127.0.0.1:%d)?maxReconnectDelay=50" % secured.port
    started = time.monotonic()
    with pytest.raises(ConnectFailed) as e:
        connect(url, login="bob", passcode="wrong")
    assert "User name [bob] or password is invalid." in str(e.value)
    assert time.monotonic() - started < 5  # refused: no endless retrying
    dest = "/queue/orders." + unique()
    with connect(url, login="bob", passcode="bob-pw") as c:
        c.send(dest, "via client", persistent=True)
    pybroker = os.path.join(os.path.dirname(sys.executable), "pybroker")
    r = subprocess.run([pybroker, "receive", dest, "--count", "1", "--url", url,
                        "--user", "carol", "--password", "carol-pw"], capture_output=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout == b"via client\n", r.stderr
    r = subprocess.run([pybroker, "send", dest, "x", "--url", "tcp://127.0.0.1:%d" % secured.port,
                        "--user", "carol", "--password", "carol-pw"], capture_output=True,
                       timeout=60)
    assert r.returncode == 1
    assert r.stderr.decode().strip() == ("pybroker: the broker refused: User carol is not "
                                         "authorized to write to: queue://%s" % dest[7:])
