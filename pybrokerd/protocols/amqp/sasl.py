"""The AMQP 1.0 SASL layer (spec part 5.3), server side, sans-I/O.

Proton's own SASL needs Cyrus SASL at build time for PLAIN (without it a server offers
ANONYMOUS only; reference/dependencies.md section 7), so the SASL exchange is done here and
proton only ever sees what follows it: the AMQP protocol header and frames.

    client: AMQP 3 1 0 0               server: AMQP 3 1 0 0, sasl-mechanisms [PLAIN ANONYMOUS]
    client: sasl-init PLAIN \\0user\\0pw  server: sasl-outcome ok (or auth, then close)
    client: AMQP 0 1 0 0 ...           (proton from here on)

`SaslServer.feed(bytes)` returns events: ("write", bytes), ("authenticate", mechanism, login,
password), ("error", text); `outcome(ok)` answers an authenticate event.  Once `done`, `rest`
holds the bytes that belong to proton.
"""

from __future__ import annotations

import struct

from proton import Data

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
TLS_HEADER = b"AMQP\x02\x01\x00\x00"
FRAME_HEADER = struct.Struct(">IBBH")  # size, doff, type (1: SASL), channel (unused)
SASL_FRAME = 1
MECHANISMS, INIT, CHALLENGE, RESPONSE, OUTCOME = 0x40, 0x41, 0x42, 0x43, 0x44
OK, AUTH = 0, 1
MAX_SASL_FRAME = 64 * 1024


class SaslError(Exception):
    """The client broke the SASL exchange; str(e) says how."""


def _described(code: int, fill) -> bytes:
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(code)
    data.put_list()
    data.enter()
    fill(data)
    data.exit()
    data.exit()
    body = data.encode()
    return FRAME_HEADER.pack(8 + len(body), 2, SASL_FRAME, 0) + body


def mechanisms_frame(mechanisms: list[str]) -> bytes:
    def fill(data):
        data.put_array(False, Data.SYMBOL)
        data.enter()
        for mechanism in mechanisms:
            data.put_symbol(mechanism)
        data.exit()
    return _described(MECHANISMS, fill)


def outcome_frame(code: int) -> bytes:
    return _described(OUTCOME, lambda data: data.put_ubyte(code))


def parse_plain(response: bytes) -> tuple[str, str]:
    """RFC 4616: [authzid] NUL authcid NUL passwd -> (login, password)."""
    parts = response.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("A SASL PLAIN response is authzid NUL login NUL password")
    return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")


class SaslServer:
    def __init__(self, mechanisms: list[str]):
        self.mechanisms = mechanisms
        self.buffer = bytearray()
        self.state = "header"   # header -> init -> waiting -> amqp-header -> done
        self.done = False
        self.rest = b""

    def feed(self, data: bytes) -> list:
        self.buffer += data
        if len(self.buffer) > MAX_SASL_FRAME + 8:
            # nothing legitimate sends this much before SASL is done: refuse to buffer it
            raise SaslError("more than %d bytes before the SASL exchange ended" % MAX_SASL_FRAME)
        events = []
        while True:
            if self.state == "header":
                if len(self.buffer) < 8:
                    return events
                header = bytes(self.buffer[:8])
                del self.buffer[:8]
                if header != SASL_HEADER:
                    raise SaslError("expected the SASL protocol header, got %r" % header)
                events.append(("write", SASL_HEADER + mechanisms_frame(self.mechanisms)))
                self.state = "init"
            elif self.state == "init":
                frame = self._frame()
                if frame is None:
                    return events
                code, fields = frame
                if code != INIT:
                    raise SaslError("expected sasl-init, got performative 0x%x" % code)
                mechanism = str(fields[0]) if fields else ""
                response = bytes(fields[1]) if len(fields) > 1 and fields[1] is not None else b""
                if mechanism not in self.mechanisms:
                    raise SaslError("SASL mechanism %r is not offered (offered: %s)"
                                    % (mechanism, ", ".join(self.mechanisms)))
                login = password = None
                if mechanism == "PLAIN":
                    login, password = parse_plain(response)
                self.state = "waiting"
                events.append(("authenticate", mechanism, login, password))
                return events
            elif self.state == "waiting":
                return events  # nothing more until the outcome is sent
            elif self.state == "amqp-header":
                if len(self.buffer) < 8:
                    return events
                if bytes(self.buffer[:8]) != AMQP_HEADER:
                    raise SaslError("expected the AMQP protocol header after SASL, got %r"
                                    % bytes(self.buffer[:8]))
                self.done = True
                self.state = "done"
                self.rest, self.buffer = bytes(self.buffer), bytearray()
                return events
            else:
                return events

    def outcome(self, ok: bool) -> bytes:
        self.state = "amqp-header" if ok else "failed"
        return outcome_frame(OK if ok else AUTH)

    def _frame(self):
        if len(self.buffer) < 8:
            return None
        size, doff, kind, _ = FRAME_HEADER.unpack_from(self.buffer)
        if kind != SASL_FRAME or doff < 2 or size < 8 or size > MAX_SASL_FRAME:
            raise SaslError("bad SASL frame header (size %d, doff %d, type %d)"
                            % (size, doff, kind))
        if len(self.buffer) < size:
            return None
        body = bytes(self.buffer[doff * 4:size])
        del self.buffer[:size]
        data = Data()
        try:
            data.decode(body)
            described = data.get_object()
            code = int(described.descriptor)
            # binary values are views of the decoder's buffer: copy them while it lives
            fields = [bytes(f) if isinstance(f, memoryview) else f
                      for f in (described.value or [])]
        except Exception as e:
            raise SaslError("undecodable SASL frame: %s" % e) from None
        return code, fields
