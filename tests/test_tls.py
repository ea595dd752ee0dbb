"""STOMP over TLS (--stomp-ssl), with a throwaway CA made by the test; client certificates."""

import datetime
import ipaddress
import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pybrokerd.client import ConnectFailed, connect
from support import BrokerProcess, unique


def _name(common):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject, issuer, key, issuer_key, ca=False, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path, cert=None, key=None):
    with open(path, "wb") as f:
        if key is not None:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
        if cert is not None:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", "test CA", ca_key, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("localhost", "test CA", server_key, ca_key,
                   san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("app-1", "test CA", client_key, ca_key)
    return {"ca": _write(d / "ca.pem", ca),
            "server": _write(d / "server.pem", server, server_key),
            "client_cert": _write(d / "client.pem", client),
            "client_key": _write(d / "client.key", key=client_key)}


def _start(tmp_path, listen, *more):
    broker = BrokerProcess("--stomp-ssl=" + listen, *more, directory=str(tmp_path)).start()
    m = broker.wait_for_log(r"STOMP\+SSL listening on [\d.]+:(\d+)")
    return broker, int(m.group(1))


def test_stomp_over_tls(tmp_path, pki):
    listen = "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (pki["server"], pki["server"])
    broker, port = _start(tmp_path, listen)
    try:
        dest = "/queue/" + unique()
        with connect("stomp+ssl://127.0.0.1:%d" % port, ca_file=pki["ca"]) as c:
            c.send(dest, "secret", persistent=True)
            assert c.subscribe(dest).receive(timeout=5).text == "secret"
        # the plain listener keeps working next to it, on the same broker
        with connect("tcp://127.0.0.1:%d" % broker.port) as c:
            c.send(dest, "plain", persistent=True)
        # a client that does not trust the CA refuses the broker
        with pytest.raises(ConnectFailed) as e:
            connect("ssl://127.0.0.1:%d" % port)
        assert "CERTIFICATE_VERIFY_FAILED" in str(e.value)
        # plain STOMP on the TLS port gets nowhere, and the broker says why in its log
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(5)
        s.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00")
        try:
            data = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            data = b""
        assert not data.startswith(b"CONNECTED")
        s.close()
    finally:
        broker.stop()


def test_client_certificates_required_with_stomp_ssl_client_ca(tmp_path, pki):
    listen = "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (pki["server"], pki["server"])
    broker, port = _start(tmp_path, listen, "--stomp-ssl-client-ca=" + pki["ca"])
    try:
        url = "ssl://127.0.0.1:%d" % port
        with pytest.raises(ConnectFailed):
            connect(url, ca_file=pki["ca"])  # no client certificate
        with connect(url, ca_file=pki["ca"], cert_file=pki["client_cert"],
                     key_file=pki["client_key"]) as c:
            c.send("/queue/" + unique(), "with a certificate", persistent=True)
    finally:
        broker.stop()


def test_amqp_over_tls(tmp_path, pki):
    from proton import Message, SSLDomain
    from proton.utils import BlockingConnection
    listen = "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (pki["server"], pki["server"])
    broker = BrokerProcess("--amqp=" + listen, directory=str(tmp_path)).start()
    try:
        port = int(broker.wait_for_log(r"AMQP listening on [\d.]+:(\d+)").group(1))
        domain = SSLDomain(SSLDomain.MODE_CLIENT)
        domain.set_trusted_ca_db(pki["ca"])
        domain.set_peer_authentication(SSLDomain.VERIFY_PEER)  # the chain: the SAN is an IP
        c = BlockingConnection("amqps://127.0.0.1:%d" % port, timeout=10, ssl_domain=domain)
        q = unique("amqps")
        c.create_sender(q).send(Message(body="over tls", durable=True))
        r = c.create_receiver(q)
        assert r.receive(timeout=5).body == "over tls"
        r.accept()
        c.close()
    finally:
        broker.stop()


def _java_trust_store(tmp_path, pki) -> str:
    """A PKCS12 trust store holding the test CA, for the Java client (-Djavax.net.ssl...)."""
    import subprocess
    trust = str(tmp_path / "trust.p12")
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", pki["ca"],
                    "-keystore", trust, "-storepass", "changeit", "-storetype", "PKCS12"],
                   check=True, capture_output=True)
    return trust


def test_openwire_over_tls(tmp_path, pki, tmp_path_factory):
    """ActiveMQ's Java client on `ssl://`, trusting our throwaway CA."""
    from java_client import JavaClient
    java = JavaClient(str(tmp_path_factory.mktemp("tls-java")))
    trust = _java_trust_store(tmp_path, pki)
    listen = "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (pki["server"], pki["server"])
    broker = BrokerProcess("--openwire=" + listen, directory=str(tmp_path)).start()
    try:
        jvm = ("-Djavax.net.ssl.trustStore=" + trust, "-Djavax.net.ssl.trustStorePassword=changeit")
        queue = unique("ow-tls")
        url = "ssl://127.0.0.1:%d" % broker.openwire_port
        assert java.run("send", url, "x", queue, 2, "tls", jvm=jvm) == ["sent 2"]
        lines = java.run("receive", url, "x", queue, 2, jvm=jvm)
        assert [line.split()[1] for line in lines] == ["tls-0", "tls-1"]
        # a client that does not trust the broker's certificate gets nowhere
        untrusted = java.run_expecting_failure("send", url, "x", queue, 1, "no")
        assert untrusted[-1].startswith("JMSException") and "sent 1" not in untrusted
    finally:
        broker.stop()


def test_openwire_client_certificates_with_ssl_client_ca(tmp_path, pki, tmp_path_factory):
    """--ssl-client-ca: the Java client needs a key store with a certificate of that CA."""
    from cryptography.hazmat.primitives.serialization import pkcs12
    from java_client import JavaClient
    java = JavaClient(str(tmp_path_factory.mktemp("tls-java-cert")))
    trust = _java_trust_store(tmp_path, pki)
    with open(pki["client_cert"], "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(pki["client_key"], "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    keystore = tmp_path / "client.p12"
    keystore.write_bytes(pkcs12.serialize_key_and_certificates(
        b"app-1", key, cert, None, serialization.BestAvailableEncryption(b"changeit")))
    listen = "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (pki["server"], pki["server"])
    broker = BrokerProcess("--openwire=" + listen, "--ssl-client-ca=" + pki["ca"],
                           directory=str(tmp_path)).start()
    try:
        trust_only = ("-Djavax.net.ssl.trustStore=" + trust,
                      "-Djavax.net.ssl.trustStorePassword=changeit")
        with_cert = trust_only + ("-Djavax.net.ssl.keyStore=%s" % keystore,
                                  "-Djavax.net.ssl.keyStorePassword=changeit",
                                  "-Djavax.net.ssl.keyStoreType=PKCS12")
        url = "ssl://127.0.0.1:%d" % broker.openwire_port
        queue = unique("ow-cert")
        refused = java.run_expecting_failure("send", url, "x", queue, 1, "no", jvm=trust_only)
        assert refused[-1].startswith("JMSException")
        assert java.run("send", url, "x", queue, 1, "yes", jvm=with_cert) == ["sent 1"]
    finally:
        broker.stop()


def test_admin_over_https(tmp_path, pki):
    import json
    import ssl
    import urllib.request
    listen = "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (pki["server"], pki["server"])
    broker = BrokerProcess("--admin=" + listen, directory=str(tmp_path)).start()
    try:
        port = broker.admin_port()
        context = ssl.create_default_context(cafile=pki["ca"])
        with urllib.request.urlopen("https://127.0.0.1:%d/api/health" % port,
                                    context=context, timeout=10) as response:
            assert json.load(response)["role"] == "master"
        with pytest.raises(urllib.error.URLError):  # a client that does not trust the CA
            urllib.request.urlopen("https://127.0.0.1:%d/api/health" % port, timeout=10)
    finally:
        broker.stop()
