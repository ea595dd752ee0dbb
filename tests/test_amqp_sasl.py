"""The sans-I/O AMQP SASL layer, fed bytes directly: any split of the input gives the same
events, and garbage only ever raises SaslError (never anything else)."""

from hypothesis import given, settings
from hypothesis import strategies as st
from proton import Data

from pybrokerd.protocols.amqp.sasl import (
    AMQP_HEADER, FRAME_HEADER, SASL_HEADER, SaslError, SaslServer)


def sasl_init(mechanism: str, response: bytes) -> bytes:
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(0x41)
    data.put_list()
    data.enter()
    data.put_symbol(mechanism)
    data.put_binary(response)
    data.exit()
    data.exit()
    body = data.encode()
    return FRAME_HEADER.pack(8 + len(body), 2, 1, 0) + body


def run(chunks):
    server = SaslServer(["PLAIN", "ANONYMOUS"])
    events = []
    for chunk in chunks:
        events += server.feed(chunk)
        if server.state == "waiting":
            server.outcome(True)
            events += server.feed(b"")  # what was read behind the sasl-init (as the connection)
    return events, server


NAME = st.text(alphabet=st.characters(blacklist_characters="\x00",
                                      blacklist_categories=("Cs",)), max_size=20)


@given(login=NAME, password=NAME,
       cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
@settings(max_examples=200, deadline=None)
def test_any_split_gives_the_same_events(login, password, cuts):
    wire = SASL_HEADER + sasl_init("PLAIN", b"\x00" + login.encode() + b"\x00"
                                   + password.encode()) + AMQP_HEADER + b"rest"
    whole, server = run([wire])
    assert ("authenticate", "PLAIN", login, password) in whole
    assert server.done and server.rest == AMQP_HEADER + b"rest"
    points = sorted({c % (len(wire) + 1) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0] + points, points + [len(wire)])]
    split, server = run(pieces)
    assert [e for e in split if e[0] == "authenticate"] == \
        [e for e in whole if e[0] == "authenticate"]
    assert server.done and server.rest.startswith(AMQP_HEADER)


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_garbage_raises_only_sasl_error(garbage):
    for wire in (garbage, SASL_HEADER + garbage):
        server = SaslServer(["PLAIN"])
        try:
            server.feed(wire)
            if server.state == "waiting":
                server.outcome(True)
                server.feed(garbage)
        except SaslError:
            pass


def test_an_unoffered_mechanism_and_a_bad_plain_response_are_refused():
    for mechanism, response in (("CRAM-MD5", b"x"), ("PLAIN", b"no-nul-separators")):
        server = SaslServer(["PLAIN"])
        try:
            server.feed(SASL_HEADER + sasl_init(mechanism, response))
        except SaslError as e:
            assert "PLAIN" in str(e)
        else:
            raise AssertionError("accepted %s" % mechanism)
