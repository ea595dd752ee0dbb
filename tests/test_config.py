"""--config: INI, TOML, and ActiveMQ's activemq.xml (the Debian package's own files are in
tests/data/activemq), with what cannot be mapped listed at start-up."""

import os
import subprocess

import pytest
from twisted.python import usage

from pybrokerd.options import Options
from support import TWISTD, BrokerProcess, RawStomp, unique

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "activemq")


def parse(*args):
    options = Options()
    options.parseOptions(list(args))
    return options


def test_debians_shipped_activemq_xml(monkeypatch, tmp_path):
    monkeypatch.setenv("ACTIVEMQ_BASE", str(tmp_path))
    o = parse("--config", os.path.join(DATA, "debian-main-activemq.xml"))
    assert o["broker-name"] == "localhost" and o["store"] == "kahadb"
    assert o["dir"] == str(tmp_path / "data" / "kahadb")
    assert o["data-dir"] == str(tmp_path / "data")
    assert o["openwire"] == "tcp:61616:interface=127.0.0.1"
    assert "mapped: transportConnector openwire -> --openwire=tcp:61616:interface=127.0.0.1" \
        in o.config_report


def test_activemqs_security_example_reports_what_it_cannot_read():
    o = parse("--config", os.path.join(DATA, "activemq-security.xml"))
    assert o["store"] == "memory"  # persistent="false"
    assert len(o.security.entries) == 8
    report = "\n".join(o.config_report)
    assert "encrypted (jasypt)" in report and "unresolved placeholder ${guest.password}" in report
    # a user whose password stayed "${guest.password}" would have a password anyone can read
    assert not o.security.users and "guest: password ${guest.password} unresolved" in report


XML = """<beans xmlns="http://www.springframework.org/schema/beans">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer">
    <property name="locations"><value>file:${activemq.conf}/credentials.properties</value></property>
  </bean>
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="imported"
          dataDirectory="%(data)s" schedulerSupport="false" useShutdownHook="false"
          advisorySupport="false">
    <destinationPolicy><policyMap><policyEntries>
      <policyEntry queue=">" producerFlowControl="true" memoryLimit="1mb"/>
    </policyEntries></policyMap></destinationPolicy>
    <persistenceAdapter><kahaDB directory="%(data)s/journal" journalMaxFileLength="32mb"/></persistenceAdapter>
    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="admin" password="${activemq.password}" groups="admins,users"/>
          <authenticationUser username="app" password="app-secret" groups="users"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry queue=">" read="admins" write="admins" admin="admins"/>
        <authorizationEntry queue="app.>" read="users" write="users" admin="users"/>
        <tempDestinationAuthorizationEntry read="users" write="users" admin="users"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
      <redeliveryPlugin><redeliveryPolicyMap><redeliveryPolicyMap><defaultEntry>
        <redeliveryPolicy maximumRedeliveries="3" initialRedeliveryDelay="2000"
                          useExponentialBackOff="true" backOffMultiplier="2"/>
      </defaultEntry></redeliveryPolicyMap></redeliveryPolicyMap></redeliveryPlugin>
    </plugins>
    <systemUsage><systemUsage>
      <memoryUsage><memoryUsage limit="64 mb"/></memoryUsage>
      <storeUsage><storeUsage limit="2 gb"/></storeUsage>
      <tempUsage><tempUsage limit="1 gb"/></tempUsage>
    </systemUsage></systemUsage>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:0?maximumConnections=50&amp;transport.hbGracePeriodMultiplier=2"/>
      <transportConnector name="mqtt" uri="mqtt://0.0.0.0:1883"/>
    </transportConnectors>
  </broker>
</beans>
"""


def write_xml(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "credentials.properties").write_text("activemq.password=from-properties\n")
    path = conf / "activemq.xml"
    path.write_text(XML % {"data": tmp_path / "data"})
    return str(path)


def test_every_mapped_part_of_an_activemq_xml(tmp_path):
    o = parse("--config", write_xml(tmp_path))
    assert (o["broker-name"], o["store"], o["dir"]) == ("imported", "kahadb",
                                                       str(tmp_path / "data" / "journal"))
    assert o["scheduler-support"] is False and o["use-shutdown-hook"] is False
    assert parse("--persistent=false")["store"] == "memory"
    assert (o["max-redeliveries"], o["redelivery-delay"], o["redelivery-backoff"]) == (3, 2000, 2.0)
    assert (o["memory-limit"], o["store-limit"]) == (64 << 20, 2 << 30)
    assert o["stomp"] == "tcp:0:interface=127.0.0.1" and o["max-connections"] == 50
    assert o.security.authenticate("admin", "from-properties").user == "admin"
    assert o.security.authenticate("app", "app-secret").groups == frozenset({"users"})
    report = "\n".join(line for line in o.config_report if line.startswith("NOT"))
    for unmapped in ("advisorySupport", "journalMaxFileLength", "policyEntry", "mqtt",
                     "tempUsage", "hbGracePeriodMultiplier"):
        assert unmapped in report, unmapped
    # the command line wins over the file
    assert parse("--config", str(tmp_path / "conf" / "activemq.xml"),
                 "--broker-name=cli")["broker-name"] == "cli"


def test_a_broker_runs_on_an_imported_config_and_says_what_it_dropped(tmp_path):
    broker = BrokerProcess("--config=%s" % write_xml(tmp_path), directory=str(tmp_path)).start()
    try:
        log = broker.log()
        assert "NOT mapped: transportConnector mqtt" in log
        c = RawStomp(broker.port)
        c.connect(login="app", passcode="app-secret")
        q = "/queue/app." + unique()
        c.send("SUBSCRIBE", {"destination": q, "id": "1"})
        # schedulerSupport="false": a delay header is ignored, as ActiveMQ ignores it
        assert c.receipt("SEND", {"destination": q, "AMQ_SCHEDULED_DELAY": "60000"},
                         b"now").command == "RECEIPT"
        assert c.recv_command("MESSAGE").body == b"now"
        denied = c.receipt("SEND", {"destination": "/queue/other"}, b"x")
        assert denied.command == "ERROR" and "not authorized" in denied.headers["message"]
        c.close()
    finally:
        broker.stop()


def test_toml_config(tmp_path):
    from pybrokerd.security import hash_password
    path = tmp_path / "broker.toml"
    path.write_text('[pybrokerd]\nstore = "memory"\nbroker-name = "from-toml"\n'
                    'max-connections = 7\n\n[users]\nann = "%s"\n\n[groups]\nteam = ["ann"]\n'
                    % hash_password("pw"))
    o = parse("--config", str(path))
    assert (o["store"], o["broker-name"], o["max-connections"]) == ("memory", "from-toml", 7)
    assert o.security.authenticate("ann", "pw").groups == frozenset({"team"})


def test_delete_all_messages_on_startup(tmp_path):
    broker = BrokerProcess(directory=str(tmp_path)).start()
    q = "/queue/" + unique("old")
    try:
        c = RawStomp(broker.port)
        c.connect()
        c.receipt("SEND", {"destination": q, "persistent": "true"}, b"stale")
        c.close()
    finally:
        broker.stop()
    again = broker.restarted()
    again.args.append("--delete-all-messages-on-startup")
    again.start()
    try:
        assert "deleted 1 messages" in again.log()
        c = RawStomp(again.port)
        c.connect()
        c.send("SUBSCRIBE", {"destination": q, "id": "1"})
        assert c.maybe_recv(0.5) is None
        c.close()
    finally:
        again.stop()


def test_an_xml_bomb_is_refused_clearly(tmp_path):
    bomb = tmp_path / "activemq.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
                    '<beans><broker>&lol2;</broker></beans>')
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "pybrokerd", "--config=%s" % bomb],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "is not valid" in result.stdout + result.stderr


def test_an_ini_with_an_unknown_option_is_refused(tmp_path):
    path = tmp_path / "broker.ini"
    path.write_text("[pybrokerd]\nno-such-option: 1\n")
    with pytest.raises(Exception) as e:
        parse("--config", str(path))
    assert "unknown option 'no-such-option'" in str(e.value)


def test_unlimited_redeliveries_and_an_ipv6_connector(tmp_path):
    path = tmp_path / "activemq.xml"
    path.write_text('<beans><broker xmlns="http://activemq.apache.org/schema/core">'
                    '<plugins><redeliveryPlugin><redeliveryPolicyMap><redeliveryPolicyMap>'
                    '<defaultEntry><redeliveryPolicy maximumRedeliveries="-1"/></defaultEntry>'
                    '</redeliveryPolicyMap></redeliveryPolicyMap></redeliveryPlugin></plugins>'
                    '<transportConnectors><transportConnector name="stomp" '
                    'uri="stomp://[::1]:61700"/></transportConnectors></broker></beans>')
    o = parse("--config", str(path))
    assert o["max-redeliveries"] is None  # ActiveMQ's -1: no limit
    assert o["stomp"] == "tcp:61700:interface=\\:\\:1"


def test_activemqs_websocket_connector_becomes_the_stomp_over_websocket_listener(tmp_path):
    path = tmp_path / "activemq.xml"
    path.write_text('<beans><broker xmlns="http://activemq.apache.org/schema/core">'
                    '<transportConnectors><transportConnector name="ws" uri="ws://0.0.0.0:61614?'
                    'maximumConnections=1000&amp;wireFormat.maxFrameSize=104857600"/>'
                    '</transportConnectors></broker></beans>')
    o = parse("--config", str(path))
    assert o["stomp-ws"] == "tcp:61614:interface=0.0.0.0"
    assert o["max-connections"] == 1000


def test_ack_wait_is_milliseconds_and_refused_below_zero():
    assert parse()["ack-wait"] == 5.0
    assert parse("--ack-wait=0")["ack-wait"] == 0.0  # write at once
    with pytest.raises(usage.UsageError) as e:
        parse("--ack-wait=-1")
    assert "--ack-wait must be 0 or more milliseconds" in str(e.value)


def test_kahadb_without_concurrent_store_and_dispatch_means_no_wait_for_acks(tmp_path):
    path = tmp_path / "activemq.xml"
    path.write_text('<beans xmlns="http://www.springframework.org/schema/beans">'
                    '<broker xmlns="http://activemq.apache.org/schema/core"><persistenceAdapter>'
                    '<kahaDB directory="%s" concurrentStoreAndDispatchQueues="false"/>'
                    '</persistenceAdapter></broker></beans>' % tmp_path)
    o = parse("--config", str(path))
    assert o["ack-wait"] == 0.0
    assert any("concurrentStoreAndDispatchQueues -> --ack-wait=0" in line
               for line in o.config_report)
