"""The admin HTTP listener: JSON API, actions, metrics, console, roles, authentication."""

import base64
import json
import re
import urllib.error
import urllib.request

import pytest
from proton.utils import BlockingConnection

from support import (
    BrokerProcess, RawStomp, broker_with_users, shared_dir_brokers, unique, wait_until)


def http(port, path, method="GET", body=None, user=None):
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    if method == "POST":
        request.add_header("Content-Type", "application/json")
    if user is not None:
        request.add_header("Authorization",
                           "Basic " + base64.b64encode(user.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(port, path, **kw):
    status, _, body = http(port, path, **kw)
    assert status == 200, (status, body)
    return json.loads(body)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    proc = BrokerProcess(directory=str(tmp_path_factory.mktemp("admin"))).start()
    proc.admin = proc.admin_port()
    yield proc
    proc.stop()


def test_broker_status_and_destinations_follow_stomp_traffic(broker):
    name = unique("adm")
    c = RawStomp(broker.port)
    c.connect(**{"client-id": name})
    for i in range(3):
        c.receipt("SEND", {"destination": "/queue/" + name, "persistent": "true"}, b"m%d" % i)
    c.receipt("SUBSCRIBE", {"destination": "/queue/%s.other" % name, "id": "s1"})
    status = get_json(broker.admin, "/api/broker")
    assert status["role"] == "master" and status["store"]["kind"] == "kahadb"
    assert status["lock"]["holder"]["broker"] == "localhost" and status["uptime"] > 0
    assert status["limits"]["memory"]["limit"] > 0 and status["scheduler"]["jobs"] >= 0
    rows = {d["name"]: d for d in get_json(broker.admin, "/api/destinations")}
    assert rows["/queue/" + name]["pending"] == 3 and rows["/queue/" + name]["enqueued"] == 3
    assert rows["/queue/%s.other" % name]["consumers"] == 1
    connections = get_json(broker.admin, "/api/connections")
    mine = [x for x in connections if x["client_id"] == name]
    assert mine and mine[0]["protocol"] == "stomp"
    assert mine[0]["subscriptions"][0]["destinations"] == ["/queue/%s.other" % name]
    messages = get_json(broker.admin, "/api/destinations/queue/%s/messages?limit=2" % name)
    assert [m["body"] for m in messages] == ["m0", "m1"] and messages[0]["persistent"]
    c.close()


def test_amqp_connections_are_listed_too(broker):
    container = unique("amqp-client")
    a = BlockingConnection("amqp://127.0.0.1:%d" % broker.amqp_port, timeout=10,
                           container_id=container)
    try:
        a.create_receiver("queue://" + unique("q"))
        rows = [x for x in get_json(broker.admin, "/api/connections") if x["client_id"] == container]
        assert rows and rows[0]["protocol"] == "amqp" and len(rows[0]["subscriptions"]) == 1
    finally:
        a.close()


def test_purge_delete_send_and_remove_a_job(broker):
    name = unique("act")
    c = RawStomp(broker.port)
    c.connect()
    for i in range(4):
        c.receipt("SEND", {"destination": "/queue/" + name}, b"x")
    status, _, body = http(broker.admin, "/api/destinations/queue/%s/purge" % name, "POST")
    assert status == 200 and json.loads(body)["purged"] == 4
    # a test message from the API reaches a STOMP consumer
    c.receipt("SUBSCRIBE", {"destination": "/queue/" + name, "id": "1"})
    status, _, body = http(broker.admin, "/api/send", "POST",
                           {"destination": "/queue/" + name, "body": "from the console",
                            "headers": {"k": "v"}, "persistent": True})
    assert status == 200, body
    got = c.recv_command("MESSAGE")
    assert got.body == b"from the console" and got.headers["k"] == "v"
    assert got.headers["persistent"] == "true"
    # deleting a queue with a consumer is refused; without, it goes
    status, _, body = http(broker.admin, "/api/destinations/queue/" + name, "DELETE")
    assert status == 400 and b"consumer" in body
    c.receipt("UNSUBSCRIBE", {"id": "1"})
    status, _, _ = http(broker.admin, "/api/destinations/queue/" + name, "DELETE")
    assert status == 200
    assert "/queue/" + name not in {d["name"] for d in get_json(broker.admin, "/api/destinations")}
    # a scheduled job is listed and removed
    c.receipt("SEND", {"destination": "/queue/" + name, "AMQ_SCHEDULED_DELAY": "600000"}, b"s")
    jobs = get_json(broker.admin, "/api/scheduler")
    assert jobs and jobs[-1]["delay"] == 600000
    status, _, _ = http(broker.admin, "/api/scheduler/" + urllib.request.quote(jobs[-1]["id"]),
                        "DELETE")
    assert status == 200
    assert jobs[-1]["id"] not in {j["id"] for j in get_json(broker.admin, "/api/scheduler")}
    assert http(broker.admin, "/api/scheduler/nosuch", "DELETE")[0] == 404
    assert http(broker.admin, "/api/send", "POST", {"destination": "nowhere"})[0] == 400
    # a form a web page elsewhere could make a browser post is refused
    forged = urllib.request.Request(
        "http://127.0.0.1:%d/api/destinations/queue/%s/purge" % (broker.admin, name),
        method="POST", data=b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(forged, timeout=10)
    assert e.value.code == 415
    c.close()


def test_metrics_in_prometheus_format(broker):
    name = unique("met")
    c = RawStomp(broker.port)
    c.connect()
    c.receipt("SEND", {"destination": "/queue/" + name, "persistent": "true"}, b"x")
    status, headers, body = http(broker.admin, "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'pybrokerd_destination_pending{destination="/queue/%s"} 1.0' % name in text
    assert 'pybrokerd_connections{protocol="stomp"}' in text
    assert re.search(r'pybrokerd_store_sync_seconds_count\{store="messages"\} [1-9]', text)
    assert 'pybrokerd_store_batch_operations_bucket{le="+Inf",store="messages"}' in text
    assert 'pybrokerd_limit_bytes{resource="memory"}' in text
    c.close()


def test_a_foreign_host_name_on_the_loopback_listener_is_refused(broker):
    request = urllib.request.Request("http://127.0.0.1:%d/api/broker" % broker.admin,
                                     headers={"Host": "attacker.example:%d" % broker.admin})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=10)
    assert e.value.code == 421  # DNS rebinding gets nowhere
    for host in ("localhost:%d" % broker.admin, "127.0.0.1", "[::1]:%d" % broker.admin):
        request = urllib.request.Request("http://127.0.0.1:%d/api/health" % broker.admin,
                                         headers={"Host": host})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def test_the_console_page_is_served_without_outside_resources(broker):
    status, headers, body = http(broker.admin, "/")
    page = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "<title>pybrokerd console</title>" in page and "/api/destinations" in page
    assert not re.search(r'(src|href)\s*=\s*["\']https?://', page)  # no CDN


def test_a_slave_answers_with_its_role_only(tmp_path):
    brokers = shared_dir_brokers(tmp_path)
    master, slave = brokers
    try:
        master.start()
        slave.start(wait=False)
        slave_admin = slave.admin_port()
        assert wait_until(lambda: "waiting for the lock" in slave.log(), 10)
        status, _, body = http(slave_admin, "/api/health")
        assert status == 503 and json.loads(body)["role"] == "slave"
        info = get_json(slave_admin, "/api/broker")
        assert info["role"] == "slave" and info["waiting_on"].endswith("lock")
        assert info["lock"]["holder"]["pid"] == master.proc.pid
        assert http(slave_admin, "/api/destinations")[0] == 503
        assert not slave.accepts()  # and no messaging listener
        assert http(master.admin_port(), "/api/health")[0] == 200
        master.kill()
        assert wait_until(lambda: http(slave_admin, "/api/health")[0] == 200, 15)
    finally:
        for b in brokers:
            b.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    proc = broker_with_users(tmp_path_factory.mktemp("admin-sec"),
                             {"root": ("rootpw", ["admins"]), "bob": ("bobpw", ["users"])})
    proc.admin = proc.admin_port()
    yield proc
    proc.stop()


def test_authentication_and_the_admin_role(secured):
    port = secured.admin
    assert http(port, "/api/health")[0] == 200  # health checks need no credentials
    status, headers, _ = http(port, "/api/broker")
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    assert http(port, "/api/broker", user="bob:wrong")[0] == 401
    assert http(port, "/api/broker", user="bob:bobpw")[0] == 200
    assert http(port, "/metrics", user="bob:bobpw")[0] == 200
    status, _, body = http(port, "/api/send", "POST", {"destination": "/queue/x", "body": "b"},
                           user="bob:bobpw")
    assert status == 403 and b"admins" in body
    assert http(port, "/api/send", "POST", {"destination": "/queue/x", "body": "r"},
                user="root:rootpw")[0] == 200
