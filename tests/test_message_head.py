"""The header block of a MESSAGE frame: the usual message's is formatted in one step
(StompSession._message_head), any other's from a dict of headers (_full_head).  Both must
write the same lines, escaped the same way, for every STOMP version; and a client parsing
the frame reads back what the producer sent."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from pybrokerd.broker.core import Broker
from pybrokerd.broker.destination import Destination
from pybrokerd.broker.message import Float32, IdGenerator, Int32, Message
from pybrokerd.protocols.stomp.codec import FrameParser, serialize
from pybrokerd.protocols.stomp.session import StompSession
from stores.memory import MemoryPersistenceAdapter

# any character UTF-8 can carry, with the ones STOMP escapes (\\ : \n \r) and NUL likely
text = st.text(alphabet=st.one_of(st.sampled_from("\\:\n\r\x00\x01ab"),
                                  st.characters(blacklist_categories=("Cs",))), max_size=10)
values = st.one_of(text, st.integers(-2 ** 63, 2 ** 63 - 1), st.booleans(),
                   st.floats(allow_nan=False), st.integers(-2 ** 31, 2 ** 31 - 1).map(Int32),
                   st.floats(width=32, allow_nan=False).map(Float32))
names = st.one_of(text.filter(bool), st.sampled_from(
    ["persistent", "priority", "destination", "expires", "JMSXGroupID", "content-type"]))


class Link:
    def __init__(self):
        self.data = bytearray()

    def write(self, data):
        self.data += data

    def write_many(self, chunks):
        for data in chunks:
            self.data += data

    def close(self):
        pass


def _session(version):
    clock = Clock()
    broker = Broker(MemoryPersistenceAdapter(), clock=clock, expiry_check_interval=0)
    link = Link()
    session = StompSession(broker, link, clock=clock, id_generator=IdGenerator())
    session.data_received(serialize("CONNECT", {"accept-version": version, "host": "x"}))
    return session, link


SESSIONS = {v: _session(v)[0] for v in ("1.0", "1.1", "1.2")}


@st.composite
def usual_messages(draw):
    """Messages with only the fields every message has, and properties."""
    return Message(draw(text), Destination(draw(st.sampled_from(["queue", "topic"])),
                                           draw(text.filter(bool))),
                   draw(st.binary(max_size=8)),
                   properties=draw(st.dictionaries(names, values, max_size=4)),
                   persistent=draw(st.booleans()), priority=draw(st.integers(0, 9)),
                   expires=draw(st.integers(0, 2 ** 62)),
                   timestamp=draw(st.integers(0, 2 ** 62)), is_bytes=draw(st.booleans()))


@settings(max_examples=400, deadline=None)
@given(usual_messages(), st.sampled_from(["1.0", "1.1", "1.2"]))
def test_the_usual_message_gets_the_lines_any_message_gets(message, version):
    session = SESSIONS[version]
    assert session._message_head(message) == session._full_head(message)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(alphabet="abc:\\\n\r-", min_size=1, max_size=8),
                       st.text(alphabet="xy:\\\n\r ", max_size=8), max_size=4),
       st.sampled_from(["1.1", "1.2"]), st.booleans())
def test_a_subscriber_reads_back_the_headers_a_producer_sent(properties, version, persistent):
    """End to end through one session: SEND with escaped headers, MESSAGE parsed back (1.1
    has no escape for a CR: it would end the line)."""
    if version == "1.1":
        properties = {k.replace("\r", ""): v.replace("\r", "") for k, v in properties.items()}
    session, link = _session(version)
    session.data_received(serialize("SUBSCRIBE", {"destination": "/queue/a:b", "id": "1"},
                                    version=version))
    headers = {"destination": "/queue/a:b", **{k: v for k, v in properties.items()
                                               if k not in ("destination", "content-length")}}
    if persistent:
        headers["persistent"] = "true"
    start = len(link.data)
    session.data_received(serialize("SEND", headers, b"body", version=version))
    parser = FrameParser()
    parser.version = version
    parser.feed(bytes(link.data[start:]))
    frame = parser.next_frame()
    assert frame.command == "MESSAGE"
    assert frame.body == b"body"
    assert frame.headers["destination"] == "/queue/a:b"
    assert frame.headers["message-id"].startswith(session.connection_id + ":")
    for k, v in headers.items():
        if k not in ("receipt", "transaction", "persistent", "priority", "expires", "timestamp",
                     "correlation-id", "reply-to", "type", "message-id", "redelivered",
                     "subscription", "ack", "JMSXUserID",
                     ""):  # (a header without a name is not passed on)
            assert frame.headers[k] == v, k
    assert "" not in frame.headers
    assert ("persistent" in frame.headers) == persistent
