"""Tests for the sans-I/O STOMP codec (pybrokerd.protocols.stomp.codec)."""

import time

import pytest
from hypothesis import given, settings, strategies as st

from pybrokerd.protocols.stomp.codec import (
    Frame,
    FrameError,
    FrameParser,
    Limits,
    escape_header,
    serialize,
    unescape_header,
)

MiB = 1024 * 1024


def parse_all(data, version="1.2", limits=None, chunks=None):
    """Feed ``data`` (in ``chunks`` if given) and drain frames like the session does."""
    p = FrameParser(limits)
    p.version = version
    frames = []
    for chunk in chunks if chunks is not None else [data]:
        p.feed(chunk)
        while (f := p.next_frame()) is not None:
            frames.append(f)
    return frames


def parse_one(data, version="1.2", limits=None):
    frames = parse_all(data, version, limits)
    assert len(frames) == 1, frames
    return frames[0]


def parse_error(data, version="1.2", limits=None) -> str:
    with pytest.raises(FrameError) as exc:
        parse_all(data, version, limits)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def one_byte_at_a_time(data):
    return [data[i : i + 1] for i in range(len(data))]


# --- basic framing ---------------------------------------------------------


def test_simple_frame():
    f = parse_one(b"SEND\ndestination:/queue/a\nreceipt:1\n\nhello\x00")
    assert f == Frame("SEND", {"destination": "/queue/a", "receipt": "1"}, b"hello")
    assert list(f.headers) == ["destination", "receipt"]


def test_frame_without_headers_or_body():
    assert parse_one(b"DISCONNECT\n\n\x00") == Frame("DISCONNECT", {}, b"")


def test_incomplete_frame_returns_none():
    p = FrameParser()
    for part in [b"SE", b"ND\nde", b"stination:/q\n", b"\n", b"bo", b"dy"]:
        p.feed(part)
        assert p.next_frame() is None
    p.feed(b"\x00")
    assert p.next_frame() == Frame("SEND", {"destination": "/q"}, b"body")
    assert p.next_frame() is None


def test_crlf_line_endings_in_every_version():
    for version in ("1.0", "1.1", "1.2"):
        f = parse_one(b"SEND\r\ndestination:/q\r\nfoo:bar\r\n\r\nbody\x00", version)
        assert f == Frame("SEND", {"destination": "/q", "foo": "bar"}, b"body")


def test_only_one_trailing_cr_is_stripped():
    f = parse_one(b"SEND\r\nfoo:bar\r\r\n\r\n\x00", "1.1")
    assert f.headers == {"foo": "bar\r"}


def test_command_returned_as_sent():
    assert parse_one(b"send \n\n\x00").command == "send "
    assert parse_one(b"S\xc3\xa9ND\r\n\n\x00").command == "SéND"


def test_header_split_at_first_colon():
    assert parse_one(b"SEND\nurl:http://x:80/\n\n\x00", "1.0").headers == {"url": "http://x:80/"}


def test_empty_header_value_and_name():
    assert parse_one(b"SEND\na:\n:b\n\n\x00").headers == {"a": "", "": "b"}


def test_repeated_header_first_wins():
    f = parse_one(b"SEND\nfoo:1\nbar:x\nfoo:2\n\n\x00")
    assert f.headers == {"foo": "1", "bar": "x"}


def test_heartbeats_between_frames():
    data = b"\n\r\n\n" + b"SEND\n\nA\x00" + b"\n\r\n\r\n\n" + b"SEND\n\nB\x00\n"
    assert [f.body for f in parse_all(data)] == [b"A", b"B"]
    assert [f.body for f in parse_all(data, chunks=one_byte_at_a_time(data))] == [b"A", b"B"]


def test_only_heartbeats_are_discarded():
    p = FrameParser()
    for _ in range(1000):
        p.feed(b"\r\n\n")
        assert p.next_frame() is None
    assert len(p._buf) == 0  # an idle peer must not grow the buffer


def test_lone_cr_then_lf_is_a_heartbeat_not_a_command():
    p = FrameParser()
    p.feed(b"\r")
    assert p.next_frame() is None
    p.feed(b"\nSEND\n\n\x00")
    assert p.next_frame() == Frame("SEND", {}, b"")


def test_one_byte_at_a_time():
    data = (
        b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00\n"
        b"SEND\ndestination:/queue/\xf0\x9f\x98\x80\ncontent-length:5\n\na\x00b\x00c\x00\n"
        b"SEND\r\na:b\\cc\r\n\r\nxyz\x00"
    )
    expected = parse_all(data)
    assert len(expected) == 3
    assert expected[1].body == b"a\x00b\x00c"
    assert parse_all(data, chunks=one_byte_at_a_time(data)) == expected


# --- body and content-length -----------------------------------------------


def test_content_length_body_with_nuls():
    body = b"\x00a\x00\x00b\x00"
    f = parse_one(b"SEND\ncontent-length:%d\n\n%s\x00" % (len(body), body))
    assert f.body == body


def test_content_length_zero():
    assert parse_one(b"SEND\ncontent-length:0\n\n\x00").body == b""


def test_content_length_with_whitespace_and_leading_zeros():
    assert parse_one(b"SEND\ncontent-length: 003 \n\nabc\x00", "1.1").body == b"abc"


@pytest.mark.parametrize("value", [b"", b"-1", b"+3", b"3.0", b"x", b"1_0", b"0x3", b"\xd9\xa3"])
def test_invalid_content_length(value):
    msg = parse_error(b"SEND\ncontent-length:" + value + b"\n\nabc\x00")
    assert msg == "Specified content-length is not a valid integer"


def test_missing_nul_after_content_length():
    msg = parse_error(b"SEND\ncontent-length:2\n\nabc\x00")
    assert msg == "content-length bytes were read and there was no trailing null byte"


def test_content_length_uses_first_occurrence():
    f = parse_one(b"SEND\ncontent-length:1\ncontent-length:3\n\na\x00")
    assert f.body == b"a"


def test_a_header_name_is_never_trimmed():
    # as ActiveMQ: " content-length " is not content-length, in 1.0 (which trims values) too
    data = b"SEND\n content-length :1\n\n\x00\x00"
    for version in ("1.0", "1.2"):
        frame = parse_all(data, version)[0]
        assert frame.body == b"" and frame.headers == {" content-length ": "1"}


def test_content_length_over_limit_fails_without_waiting_for_body():
    p = FrameParser(Limits(max_body_length=10))
    p.feed(b"SEND\ncontent-length:11\n\n")
    with pytest.raises(FrameError, match=r"^The maximum data length was exceeded \(10 bytes\)$"):
        p.next_frame()


def test_content_length_at_limit_is_fine():
    assert parse_one(b"SEND\ncontent-length:10\n\n0123456789\x00", limits=Limits(max_body_length=10))


def test_body_without_content_length_over_limit():
    limits = Limits(max_body_length=10)
    assert parse_one(b"SEND\n\n0123456789\x00", limits=limits).body == b"0123456789"
    p = FrameParser(limits)
    p.feed(b"SEND\n\n0123456789")
    assert p.next_frame() is None
    p.feed(b"a")  # passes the limit with no NUL in sight: fail now, not at NUL
    with pytest.raises(FrameError, match=r"^The maximum data length was exceeded \(10 bytes\)$"):
        p.next_frame()
    # Also when the whole oversized frame arrives at once.
    assert "data length" in parse_error(b"SEND\n\n0123456789a\x00", limits=limits)


def test_default_limit_messages():
    assert Limits() == Limits(1024, 10240, 1000, 104857600)
    msg = parse_error(b"SEND\ncontent-length:%d\n\n" % (100 * MiB + 1))
    assert msg == "The maximum data length was exceeded (104857600 bytes)"


# --- header decoding -------------------------------------------------------


def test_utf8_headers_with_4_byte_chars():
    name, value = "k\U0001f600", "v\U0001f4a9\u00e9\u4e2d"
    f = parse_one(serialize("SEND", {name: value}))
    assert f.headers == {name: value}


@pytest.mark.parametrize(
    "raw", [b"SE\xffND\n\n\x00", b"SEND\nfoo:\xc3\n\n\x00", b"SEND\n\xf0\x9f:x\n\n\x00"]
)
def test_invalid_utf8_is_an_error(raw):
    assert parse_error(raw).startswith("Invalid UTF-8")


def test_body_is_not_decoded():
    assert parse_one(b"SEND\n\n\xff\xfe\x00").body == b"\xff\xfe"


def test_unescape_per_version():
    raw = b"SEND\nk\\cey:a\\\\b\\nc\\cd\\re\\tf\\\n\n\x00"
    assert parse_one(raw, "1.2").headers == {"k:ey": "a\\b\nc:d\re\\tf\\"}
    assert parse_one(raw, "1.1").headers == {"k:ey": "a\\b\nc:d\\re\\tf\\"}
    # 1.0: ActiveMQ decodes the 1.1 escapes in a value for 1.0 clients too, not in a name
    assert parse_one(raw, "1.0").headers == {"k\\cey": "a\\b\nc:d\\re\\tf\\"}


def test_unescape_is_single_pass():
    assert unescape_header("\\\\n", "1.2") == "\\n"
    assert unescape_header("\\\\\\c", "1.1") == "\\:"


def test_unknown_escape_kept_literally():
    assert unescape_header("a\\tb\\", "1.2") == "a\\tb\\"
    assert parse_one(b"SEND\nx:a\\tb\n\n\x00").headers == {"x": "a\\tb"}


def test_version_10_trims_values_not_names():
    """As ActiveMQ (checked against 5.17: " sp : v " comes back as " sp :v" on 1.0)."""
    f = parse_one(b"SEND\n  destination :  /queue/a \t\n\n\x00", "1.0")
    assert f.headers == {"  destination ": "/queue/a"}
    f = parse_one(b"SEND\n  destination :  /queue/a \t\n\n\x00", "1.1")
    assert f.headers == {"  destination ": "  /queue/a \t"}


def test_version_10_trims_before_unescaping():
    assert parse_one(b"SEND\nx: a\\n\n\n\x00", "1.0").headers == {"x": "a\n"}


@pytest.mark.parametrize("command", ["CONNECT", "STOMP"])
def test_connect_headers_not_unescaped(command):
    raw = command.encode() + b"\nlogin:a\\cb\npasscode:p\\\\w\n\n\x00"
    for version in ("1.0", "1.1", "1.2"):
        assert parse_one(raw, version).headers == {"login": "a\\cb", "passcode": "p\\\\w"}


def test_header_line_without_colon_is_a_header_with_empty_value():
    # ActiveMQ accepts such a line as "name:" rather than dropping the connection
    frame = parse_one(b"SEND\ndestination:/queue/a\nbogus\n\n\x00", "1.2")
    assert frame.headers == {"destination": "/queue/a", "bogus": ""}


def test_version_switch_between_frames_in_one_buffer():
    data = (
        b"CONNECT\naccept-version:1.2\nlogin:a\\rb\n\n\x00"
        b"SEND\nx:a\\rb\n\n\x00"
        b"SEND\nx:a\\rb\n\n\x00"
    )
    p = FrameParser()
    p.feed(data)
    assert p.version == "1.0"
    assert p.next_frame().headers["login"] == "a\\rb"
    p.version = "1.2"
    assert p.next_frame().headers == {"x": "a\rb"}
    p.version = "1.1"
    assert p.next_frame().headers == {"x": "a\\rb"}
    assert p.next_frame() is None


def test_version_switch_while_frame_is_arriving():
    p = FrameParser()
    p.feed(b"SEND\nx: a\\rb\n\nbo")
    assert p.next_frame() is None
    p.version = "1.2"
    p.feed(b"dy\x00")
    assert p.next_frame() == Frame("SEND", {"x": " a\rb"}, b"body")


# --- limits ----------------------------------------------------------------


def test_command_length_limit():
    limits = Limits(max_command_length=8)
    assert parse_one(b"X" * 8 + b"\r\n\n\x00", limits=limits).command == "X" * 8
    msg = parse_error(b"X" * 9 + b"\n\n\x00", limits=limits)
    assert msg == "The maximum command length was exceeded (8 bytes)"
    assert "command length" in parse_error(b"X" * 9 + b"\r\n\n\x00", limits=limits)


def test_command_length_limit_without_eol_fails_early():
    p = FrameParser()
    p.feed(b"\n\n" + b"X" * 1024 + b"\r")  # may still be a 1024-byte command + CRLF
    assert p.next_frame() is None
    p.feed(b"X")
    with pytest.raises(FrameError, match=r"^The maximum command length was exceeded \(1024 bytes\)$"):
        p.next_frame()


def test_header_length_limit():
    limits = Limits(max_header_length=10)
    assert parse_one(b"SEND\nabcd:12345\r\n\n\x00", limits=limits).headers == {"abcd": "12345"}
    msg = parse_error(b"SEND\nabcd:123456\n\n\x00", limits=limits)
    assert msg == "The maximum header length was exceeded (10 bytes)"


def test_header_length_limit_without_eol_fails_early():
    p = FrameParser()
    p.feed(b"SEND\nfoo:" + b"x" * 10240)
    with pytest.raises(FrameError, match=r"^The maximum header length was exceeded \(10240 bytes\)$"):
        p.next_frame()


def test_max_headers():
    limits = Limits(max_headers=3)
    ok = b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(3)) + b"\n\x00"
    assert len(parse_one(ok, limits=limits).headers) == 3
    bad = b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(4)) + b"\n\x00"
    assert parse_error(bad, limits=limits) == "The maximum number of headers was exceeded (3)"


def test_max_headers_default_message():
    bad = b"SEND\n" + b"h:v\n" * 1001 + b"\n\x00"
    assert parse_error(bad) == "The maximum number of headers was exceeded (1000)"


# --- error behaviour -------------------------------------------------------


def test_error_is_sticky():
    p = FrameParser()
    p.feed(b"SEND\ncontent-length:x\n\n\x00SEND\n\n\x00")
    with pytest.raises(FrameError) as first:
        p.next_frame()
    p.feed(b"SEND\n\n\x00")  # feed never raises, even after an error
    for _ in range(3):
        with pytest.raises(FrameError) as again:
            p.next_frame()
        assert again.value is first.value


def test_frames_before_an_error_are_returned():
    p = FrameParser()
    p.feed(b"SEND\n\nok\x00SEND\ncontent-length:x\n\n\x00")
    assert p.next_frame().body == b"ok"
    with pytest.raises(FrameError):
        p.next_frame()


# --- serialize / escaping --------------------------------------------------


def test_serialize_format():
    data = serialize("MESSAGE", {"destination": "/queue/a", "content-length": 3}, b"a\x00b")
    assert data == b"MESSAGE\ndestination:/queue/a\ncontent-length:3\n\na\x00b\x00\n"
    assert serialize("RECEIPT", [("receipt-id", "1"), ("x", "y")]) == b"RECEIPT\nreceipt-id:1\nx:y\n\n\x00\n"
    assert serialize("CONNECTED", {}) == b"CONNECTED\n\n\x00\n"


def test_serialize_escaping_per_version():
    h = {"a:b": "c\\d\ne:f\rg"}
    assert serialize("MESSAGE", h, version="1.0") == b"MESSAGE\na:b:c\\d\ne:f\rg\n\n\x00\n"
    assert serialize("MESSAGE", h, version="1.1") == b"MESSAGE\na\\cb:c\\\\d\\ne\\cf\rg\n\n\x00\n"
    assert serialize("MESSAGE", h, version="1.2") == b"MESSAGE\na\\cb:c\\\\d\\ne\\cf\\rg\n\n\x00\n"


def test_connected_never_escaped():
    h = {"server": "ActiveMQ/5.17:x"}
    for version in ("1.0", "1.1", "1.2"):
        assert serialize("CONNECTED", h, version=version) == b"CONNECTED\nserver:ActiveMQ/5.17:x\n\n\x00\n"


def test_serialize_utf8():
    assert serialize("MESSAGE", {"k": "\U0001f600"}) == b"MESSAGE\nk:\xf0\x9f\x98\x80\n\n\x00\n"


def test_escape_header_functions():
    assert escape_header("a\\b:c\nd\re", "1.0") == "a\\b:c\nd\re"
    assert escape_header("a\\b:c\nd\re", "1.1") == "a\\\\b\\cc\\nd\re"
    assert escape_header("a\\b:c\nd\re", "1.2") == "a\\\\b\\cc\\nd\\re"


@given(st.text(), st.sampled_from(["1.1", "1.2"]))
def test_escape_round_trip(text, version):
    assert unescape_header(escape_header(text, version), version) == text


@given(st.text(st.sampled_from("\\cnrt:x\n"), max_size=12), st.sampled_from(["1.0", "1.1", "1.2"]))
def test_unescape_reads_each_sequence_once_left_to_right(text, version):
    # what the spec's grammar says, one escape at a time: the quick path must agree
    table = {"\\": "\\", "c": ":", "n": "\n"}
    if version == "1.2":
        table["r"] = "\r"
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(table.get(text[i + 1], text[i:i + 2]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    assert unescape_header(text, version) == "".join(out)


@given(st.dictionaries(st.text(), st.text(), max_size=5), st.binary(max_size=50))
def test_serialize_parse_round_trip_12(headers, body):
    headers.pop("content-length", None)
    headers["content-length"] = str(len(body))
    assert parse_one(serialize("MESSAGE", headers, body)) == Frame("MESSAGE", headers, body)


def test_repr_hides_passcode():
    f = Frame("CONNECT", {"login": "bob", "passcode": "s3cret"})
    assert "s3cret" not in repr(f)
    assert "bob" in repr(f) and "CONNECT" in repr(f)
    assert "s3cret" not in repr(parse_one(b"STOMP\npasscode:s3cret\n\n\x00"))


def test_frame_defaults():
    f = Frame("ACK")
    assert (f.command, f.headers, f.body) == ("ACK", {}, b"")
    assert not hasattr(f, "__dict__")


# --- random splits ---------------------------------------------------------

header_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)


@st.composite
def frame_streams(draw):
    frames, parts = [], []
    for _ in range(draw(st.integers(1, 5))):
        command = draw(st.sampled_from(["SEND", "MESSAGE", "SUBSCRIBE", "ACK", "ERROR"]))
        headers = draw(st.dictionaries(header_text, header_text, max_size=4))
        headers.pop("content-length", None)
        if draw(st.booleans()):
            body = draw(st.binary(max_size=40))
            headers["content-length"] = str(len(body))
        else:
            body = draw(st.binary(max_size=40)).replace(b"\x00", b"")
        frames.append(Frame(command, headers, body))
        parts.append(draw(st.sampled_from([b"", b"\n", b"\r\n", b"\n\r\n\n"])))
        parts.append(serialize(command, headers, body))
    return frames, b"".join(parts)


@settings(max_examples=200, deadline=None)
@given(frame_streams(), st.data())
def test_random_splits(stream, data):
    frames, raw = stream
    assert parse_all(raw) == frames
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=20)))
    chunks = [raw[a:b] for a, b in zip([0] + cuts, cuts + [len(raw)])]
    assert parse_all(raw, chunks=chunks) == frames


class StepByStepParser(FrameParser):
    """The parser without its whole-frame shortcut: every frame read line by line."""

    def _whole_frame(self):
        return None


def outcome(parser, raw, version, limits, commands):
    """(frames, error text, error receipt) of parsing `raw` read at once."""
    p = parser(limits, commands)
    p.version = version
    frames = []
    try:
        p.feed(raw)
        while (f := p.next_frame()) is not None:
            frames.append(f)
    except FrameError as e:
        return frames, str(e), e.receipt
    return frames, None, None


header_bits = st.sampled_from([
    "destination", "/queue/a", "receipt", "r-1", "content-length", "x", "", ":", "\\c",
    "\\n", "\\r", "\\t", "\\", " padded ", "caf\u00e9", "\u2603", "h" * 12, "\r", "\x00",
])


@st.composite
def odd_frame_streams(draw):
    """Frames, mostly well formed, with whatever a client may get wrong in them."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        parts.append(draw(st.sampled_from([b"", b"", b"\n", b"\r\n", b"\n\n"])))
        eol = draw(st.sampled_from([b"\n"] * 5 + [b"\r\n"]))
        parts.append(draw(st.sampled_from(
            [b"SEND"] * 4 + [b"MESSAGE", b"CONNECT", b"BOGUS", b"send", b"SE\x01ND", b"\xff"]))
            + eol)
        for _ in range(draw(st.integers(0, 4))):
            name = draw(st.sampled_from(["destination", "receipt", "x"] * 3 + [
                "", "a\\cb", "\u2603", " padded ", "h" * 12, "a\\qb", "x\r"]))
            value = draw(st.sampled_from(["/queue/a", "1", ""])
                         | st.lists(header_bits, max_size=3).map("".join))
            parts.append(name.encode() + b":" + value.encode() + eol)
        body = draw(st.sampled_from([b"", b"abc", b"a\x00c", b"\xff" * 12]))
        length = draw(st.sampled_from([None, None, len(body), len(body) + 1, " 3 ", "x", "0"]))
        if length is not None:
            parts.append(b"content-length:%s" % str(length).encode() + eol)
        parts.append(eol + body + b"\x00")
    return b"".join(parts)


@settings(max_examples=500, deadline=None)
@given(odd_frame_streams(), st.sampled_from(["1.0", "1.1", "1.2"]), st.booleans(), st.booleans())
def test_the_whole_frame_shortcut_parses_as_the_line_by_line_parser(raw, version, small,
                                                                     known):
    # a frame that arrives whole takes a quicker path than one assembled across reads:
    # both must give the same frames, and the same error at the same point
    limits = Limits(max_command_length=6, max_header_length=30, max_headers=3,
                    max_body_length=10) if small else None
    commands = {"SEND", "CONNECT", "STOMP", "MESSAGE"} if known else None
    expected = outcome(StepByStepParser, raw, version, limits, commands)
    assert outcome(FrameParser, raw, version, limits, commands) == expected


@settings(max_examples=300, deadline=None)
@given(odd_frame_streams(), st.sampled_from(["1.0", "1.1", "1.2"]), st.booleans())
def test_frames_repeated_parse_as_the_first_time(raw, version, known):
    """A producer repeats its header lines frame after frame: the parser keeps them decoded
    after the second time, and must still give what the line-by-line parser gives."""
    commands = {"SEND", "CONNECT", "STOMP", "MESSAGE"} if known else None
    raw = raw * 3
    assert outcome(FrameParser, raw, version, None, commands) == \
        outcome(StepByStepParser, raw, version, None, commands)


def test_repeated_header_lines_give_each_frame_its_own_headers_for_the_version_in_force():
    frame = b"SEND\ndestination:/queue/a\nx: pad \n\nbody\x00"
    p = FrameParser()
    p.version = "1.0"  # strips header values
    p.feed(frame * 3)
    first, second, third = p.next_frame(), p.next_frame(), p.next_frame()
    assert first.headers == second.headers == third.headers == {
        "destination": "/queue/a", "x": "pad"}
    third.headers["x"] = "changed"  # a frame's headers are its own
    p.feed(frame)
    assert p.next_frame().headers["x"] == "pad"
    p.version = "1.2"  # keeps them as sent
    p.feed(frame * 3)
    assert [p.next_frame().headers["x"] for _ in range(3)] == [" pad "] * 3


# --- performance -----------------------------------------------------------

BIG = 64 * MiB


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


@pytest.fixture(scope="module")
def big_body():
    return b"x" * BIG


@pytest.mark.parametrize("with_length", [True, False])
@pytest.mark.parametrize("chunked", [False, True])
def test_64mib_body(big_body, with_length, chunked):
    head = b"SEND\ncontent-length:%d\n\n" % BIG if with_length else b"SEND\n\n"
    raw = head + big_body + b"\x00\nSEND\n\nnext\x00"
    chunks = [raw[i : i + 65536] for i in range(0, len(raw), 65536)] if chunked else None
    frames, elapsed = timed(lambda: parse_all(raw, chunks=chunks))
    assert elapsed < 5, elapsed
    assert [len(f.body) for f in frames] == [BIG, 4]
    assert frames[0].body == big_body


class CountingBuffer(bytearray):
    """Counts bytes covered by find() calls, to prove nothing is rescanned."""

    scanned = 0

    def find(self, sub, start=0, end=None):
        end = len(self) if end is None else end
        CountingBuffer.scanned += max(0, end - start)
        return super().find(sub, start, end)


@pytest.mark.parametrize(
    "raw",
    [
        b"SEND\n\n" + b"y" * (100 * 1024) + b"\x00",
        b"SEND\ncontent-length:102400\n\n" + b"\x00" * (100 * 1024) + b"\x00",
        b"S" * 1000 + b"\n" + b"h:" * 3000 + b"\n" + b"h:v\n" * 500 + b"\n\x00",
    ],
    ids=["body", "content-length", "command-and-headers"],
)
def test_byte_by_byte_trickle_is_linear(raw):
    p = FrameParser()
    p._buf = CountingBuffer()
    CountingBuffer.scanned = 0
    t = time.perf_counter()
    for i in range(len(raw)):
        p.feed(raw[i : i + 1])
        frame = p.next_frame()
        assert (frame is None) == (i < len(raw) - 1)
    assert time.perf_counter() - t < 5
    assert CountingBuffer.scanned <= 2 * len(raw)


def test_many_small_frames_in_one_buffer_is_linear():
    raw = b"SEND\ndestination:/q\n\nx\x00\n" * 100_000
    frames, elapsed = timed(lambda: parse_all(raw))
    assert len(frames) == 100_000
    assert elapsed < 5, elapsed


@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=20)), max_size=6),
       st.sampled_from(["1.0", "1.1", "1.2"]), st.sampled_from(["MESSAGE", "CONNECTED"]))
def test_fast_serialize_matches_header_by_header_escaping(headers, version, command):
    from pybrokerd.protocols.stomp.codec import _serialize_slow
    esc = "1.0" if command == "CONNECTED" else version
    assert serialize(command, headers, b"b", version) == _serialize_slow(command, headers, b"b", esc)
