"""Heart-beats and the CONNECT deadline, driven by a fake clock (no real waiting)."""

from twisted.internet.task import Clock

from pybrokerd.broker.core import Broker
from pybrokerd.broker.message import IdGenerator
from pybrokerd.protocols.stomp.codec import FrameParser, serialize
from pybrokerd.protocols.stomp.session import StompConfig, StompSession
from stores.memory import MemoryPersistenceAdapter


class Link:
    def __init__(self):
        self.data = bytearray()
        self.closed = False

    def write(self, data):
        self.data += data

    def close(self):
        self.closed = True

    def frames(self):
        p = FrameParser()
        p.version = "1.2"
        p.feed(bytes(self.data))
        out = []
        while (f := p.next_frame()) is not None:
            out.append(f)
        return out


def make_session(**config):
    clock = Clock()
    broker = Broker(MemoryPersistenceAdapter(), clock=clock, expiry_check_interval=0)
    link = Link()
    session = StompSession(broker, link, clock=clock, id_generator=IdGenerator(),
                           config=StompConfig(**config))
    return clock, link, session


def connect(session, **headers):
    session.data_received(serialize("CONNECT", dict({"accept-version": "1.2"}, **headers)))


def test_silent_client_is_dropped_after_grace():
    clock, link, session = make_session(heartbeat_grace=1.5)
    connect(session, **{"heart-beat": "1000,0"})
    clock.advance(1.4)
    assert not link.closed
    clock.advance(0.2)
    assert link.closed


def test_client_beating_on_time_is_kept():
    clock, link, session = make_session(heartbeat_grace=1.5)
    connect(session, **{"heart-beat": "1000,0"})
    for _ in range(20):
        clock.advance(1.1)  # a little late every time: ActiveMQ's grace of 1.0 would drop it
        session.data_received(b"\n")
    assert not link.closed


def test_broker_sends_beats_at_the_requested_rate():
    clock, link, session = make_session()
    connect(session, **{"heart-beat": "0,500"})
    start = len(link.data)
    for _ in range(10):
        clock.advance(0.5)
    beats = bytes(link.data[start:])
    assert beats == b"\n" * 10


def test_no_beats_when_traffic_flows():
    clock, link, session = make_session()
    connect(session, **{"heart-beat": "0,500"})
    for i in range(10):
        clock.advance(0.3)
        session.data_received(serialize("BEGIN", {"transaction": "t%d" % i, "receipt": "r%d" % i}))
    frames = link.frames()
    assert len(frames) == 11
    assert len(link.data) == sum(len(serialize(f.command, f.headers, f.body)) for f in frames)


def test_no_connect_within_timeout_closes():
    clock, link, session = make_session(connect_timeout=30)
    clock.advance(29.9)
    assert not link.closed
    clock.advance(0.2)
    assert link.closed


def test_connected_in_time_is_not_closed():
    clock, link, session = make_session(connect_timeout=30)
    connect(session)
    clock.advance(60)
    assert not link.closed
    assert link.frames()[0].command == "CONNECTED"


def test_zero_heart_beat_means_none():
    clock, link, session = make_session()
    connect(session, **{"heart-beat": "0,0"})
    clock.advance(3600)
    assert not link.closed
    frames = link.frames()
    assert len(link.data) == sum(len(serialize(f.command, f.headers, f.body)) for f in frames)


def test_session_provides_the_consumer_interface():
    from zope.interface.verify import verifyObject

    from pybrokerd.broker.interfaces import IConsumerSession
    _, _, session = make_session()
    assert verifyObject(IConsumerSession, session)
