"""Bounded fuzz run of the STOMP and OpenWire codecs (hypothesis at high example counts).

    .venv/bin/python bench/fuzz.py [--examples 200000] [--seed N] [--codec stomp|openwire|all]

OpenWire: the properties of tests/test_openwire_codec.py (garbage raises only OpenWireError,
encode -> decode round trips of every data structure, any split of the bytes, primitive maps
keep their Java types).

Properties (the same ones tests/test_codec.py checks with few examples):
1. random bytes never raise anything but FrameError, and parsing is linear (no hang);
2. serialize -> parse gives back the frame, for any command, headers and body, every version;
3. a stream of frames parses the same however it is split into reads;
4. a frame a client could send is parsed the same by the broker's parser with the command
   check on (commands=...), or refused with FrameError("Unknown STOMP action...").
Prints the number of examples per property and the time taken; exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from pybrokerd.protocols.stomp.codec import FrameError, FrameParser, serialize  # noqa: E402
from pybrokerd.protocols.stomp.session import CLIENT_COMMANDS  # noqa: E402

COMMANDS = st.sampled_from(sorted(CLIENT_COMMANDS) + ["MESSAGE", "RECEIPT", "ERROR", "CONNECTED"])
ESCAPED_COMMANDS = COMMANDS.filter(lambda c: c not in ("CONNECT", "STOMP", "CONNECTED"))
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
HEADERS = st.dictionaries(TEXT.filter(lambda k: k and k != "content-length"), TEXT, max_size=8)
VERSIONS = st.sampled_from(["1.1", "1.2"])
# no control characters: what a well-behaved client puts in headers (escapes aside)
PLAIN = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
PLAIN_HEADERS = st.dictionaries(PLAIN.filter(lambda k: k and k != "content-length"), PLAIN,
                                max_size=8)


def parse_all(data: bytes, version: str, chunks=None, commands=None):
    parser = FrameParser(commands=commands)
    parser.version = version
    frames = []
    pieces = chunks or [data]
    for piece in pieces:
        parser.feed(piece)
        while True:
            frame = parser.next_frame()
            if frame is None:
                break
            frames.append(frame)
    return frames


def split(data: bytes, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


def openwire_properties(config, count):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import struct

    from pybrokerd.protocols.openwire import codec as ow
    import test_openwire_codec as t

    @config
    @given(st.binary(max_size=2048))
    def ow_garbage(data):
        count("ow-garbage")
        started = time.monotonic()
        try:
            ow.Decoder(max_frame_size=1 << 20).feed(data)
        except ow.OpenWireError:
            pass
        for type_byte in (3, 5, 21, 22, 28):
            try:
                ow.Decoder().feed(struct.pack(">i", len(data) + 1) + bytes([type_byte]) + data)
            except ow.OpenWireError:
                pass
        assert time.monotonic() - started < 1.0

    @config
    @given(t.structs())
    def ow_round_trip(command):
        count("ow-round-trip")
        assert ow.Decoder().feed(ow.encode(command)) == [command]

    @config
    @given(st.lists(t.structs(), min_size=1, max_size=4),
           st.lists(st.integers(0, 10 ** 5), max_size=8))
    def ow_any_split(commands, cuts):
        count("ow-any-split")
        data = b"".join(ow.encode(c) for c in commands)
        decoder = ow.Decoder()
        got = []
        for piece in split(data, cuts):
            got.extend(decoder.feed(piece))
        assert got == commands

    @config
    @given(st.dictionaries(t.TEXT, t.JAVA_VALUES, max_size=6))
    def ow_maps(values):
        count("ow-maps")
        assert t.same(ow.decode_map(ow.encode_map(values)), values)

    return [ow_garbage, ow_round_trip, ow_any_split, ow_maps]


def run(examples: int, seed: int | None, codec: str = "all") -> int:
    config = settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
                      suppress_health_check=list(HealthCheck))
    failures = 0
    counts = {}

    def count(name):
        counts[name] = counts.get(name, 0) + 1

    @config
    @given(st.binary(max_size=2048), VERSIONS)
    def garbage(data, version):
        count("garbage")
        started = time.monotonic()
        try:
            parse_all(data, version, commands=CLIENT_COMMANDS)
        except FrameError:
            pass
        assert time.monotonic() - started < 1.0

    @config
    @given(COMMANDS, HEADERS, st.binary(max_size=512), VERSIONS)
    def round_trip(command, headers, body, version):
        count("round-trip")
        headers = dict(headers, **{"content-length": str(len(body))})
        unescaped = command in ("CONNECT", "STOMP", "CONNECTED")
        if unescaped:  # no escaping in these frames (STOMP spec): only plain headers fit
            headers = {k: v for k, v in headers.items()
                       if not any(c in k + v for c in ":\n\r\\")
                       and k.strip() == k and v.strip() == v}
        if version == "1.1":  # 1.1 has no escape for CR: a CR before the line end is CRLF
            headers = {k: v for k, v in headers.items() if "\r" not in k + v}
        data = serialize(command, headers, body, version)
        [frame] = parse_all(data, "1.0" if command == "CONNECTED" else version)
        assert frame.command == command and frame.body == body
        assert frame.headers == headers, (command, version, headers, frame.headers)

    @config
    # (CONNECT, STOMP and CONNECTED carry no escapes: arbitrary headers do not fit in them)
    @given(st.lists(st.tuples(ESCAPED_COMMANDS, HEADERS, st.binary(max_size=64)), min_size=1,
                    max_size=5),
           st.lists(st.integers(0, 10 ** 6), max_size=12))
    def any_split(frames, cuts):
        count("any-split")
        data = b"".join(serialize(c, dict(h, **{"content-length": str(len(b))}), b, "1.2")
                        for c, h, b in frames)
        whole = parse_all(data, "1.2")
        assert parse_all(data, "1.2", chunks=split(data, cuts)) == whole

    @config
    @given(st.sampled_from(sorted(CLIENT_COMMANDS)), PLAIN_HEADERS, st.binary(max_size=64))
    def command_check(command, headers, body):
        count("command-check")
        data = serialize(command, dict(headers, **{"content-length": str(len(body))}), body, "1.2")
        assert parse_all(data, "1.2", commands=CLIENT_COMMANDS) == parse_all(data, "1.2")

    props = []
    if codec in ("stomp", "all"):
        props += [garbage, round_trip, any_split, command_check]
    if codec in ("openwire", "all"):
        props += openwire_properties(config, count)
    for prop in props:
        started = time.monotonic()
        try:
            prop()
            status = "ok"
        except Exception as e:  # report and go on with the others
            failures += 1
            status = "FAILED: %r" % (e,)
        name = prop.__name__.replace("_", "-")
        print("%-14s %8d examples  %6.1f s  %s" % (name, counts.get(name, 0),
                                                   time.monotonic() - started, status), flush=True)
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=200000, help="per property")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--codec", choices=("stomp", "openwire", "all"), default="all")
    args = parser.parse_args()
    return run(args.examples, args.seed, args.codec)


if __name__ == "__main__":
    sys.exit(main())
