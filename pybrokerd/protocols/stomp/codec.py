"""STOMP frame codec: incremental parser and serializer (sans-I/O, stdlib only).

Wire behaviour follows ActiveMQ 5.17's StompWireFormat where the STOMP specs
leave room: lines may end in CRLF in every version, unknown header escapes are
kept literally, the first occurrence of a repeated header wins, and 1.0 header
names and values are trimmed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "FrameError",
    "Limits",
    "Frame",
    "FrameParser",
    "serialize",
    "header_lines",
    "escape_header",
    "unescape_header",
]


class FrameError(Exception):
    """Fatal wire-format violation; the connection must be closed.

    str(e) is one human-readable line; `receipt` the frame's receipt header, when it was
    read before the violation was found.
    """

    def __init__(self, text: str, receipt: str | None = None):
        super().__init__(text)
        self.receipt = receipt


@dataclass
class Limits:
    max_command_length: int = 1024  # bytes of the command line
    max_header_length: int = 10 * 1024  # bytes of one header line
    max_headers: int = 1000
    max_body_length: int = 100 * 1024 * 1024


class Frame:
    __slots__ = ("command", "headers", "body")

    def __init__(self, command, headers=None, body=b""):
        self.command = command
        self.headers = {} if headers is None else headers
        self.body = body

    def __eq__(self, other):
        if not isinstance(other, Frame):
            return NotImplemented
        return (self.command, self.headers, self.body) == (other.command, other.headers, other.body)

    __hash__ = None  # mutable

    def __repr__(self):
        # Frames end up in logs; never leak credentials there.
        headers = {k: ("****" if k == "passcode" else v) for k, v in self.headers.items()}
        body = self.body if len(self.body) <= 64 else bytes(self.body[:64]) + b"..."
        return f"Frame({self.command!r}, {headers!r}, {body!r})"


# --- header escaping -------------------------------------------------------

_ESCAPE_11 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c"})
_ESCAPE_12 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": "\\r"})
_UNESCAPE_11 = {"\\": "\\", "c": ":", "n": "\n"}
_UNESCAPE_12 = {**_UNESCAPE_11, "r": "\r"}
_ESCAPE_SEQ = re.compile(r"\\(.)", re.DOTALL)


def escape_header(text: str, version: str) -> str:
    if version == "1.0":
        return text
    return text.translate(_ESCAPE_11 if version == "1.1" else _ESCAPE_12)


def unescape_header(text: str, version: str) -> str:
    # 1.0 has no escaping in the spec, but ActiveMQ decodes \\, \c and \n for
    # every version, so a 1.0 client relying on that keeps working.
    if "\\" not in text:
        return text
    if "\\\\" not in text:
        # no escaped backslash, so each of these is an escape: str.replace, in C (an ack id
        # of a 1.2 ACK has five colons)
        plain = text.replace("\\c", ":").replace("\\n", "\n")
        if version not in ("1.0", "1.1"):
            plain = plain.replace("\\r", "\r")
        if "\\" not in plain:
            return plain
    table = _UNESCAPE_12 if version not in ("1.0", "1.1") else _UNESCAPE_11
    # An unknown sequence (or a lone trailing backslash, which the regex does
    # not match) stays literal: ActiveMQ is lenient here, not strict like the spec.
    return _ESCAPE_SEQ.sub(lambda m: table.get(m.group(1), m.group(0)), text)


_NOT_ESCAPED = frozenset(("CONNECT", "STOMP"))  # the spec exempts these (1.0 clients send them)
_UNESCAPED_FRAMES = frozenset(("CONNECT", "STOMP", "CONNECTED"))


# All headers are escaped in one go: names and values are joined with \x00 (the colon) and
# \x01 (the line break), escaped, and the two placeholders turned into ":" and "\n".


def serialize(command: str, headers, body: bytes = b"", version: str = "1.2") -> bytes:
    # CONNECT, STOMP and CONNECTED are exempt from escaping (the spec keeps them readable
    # by 1.0 peers), as the parser exempts them on the way in.
    esc = "1.0" if command in _UNESCAPED_FRAMES else version
    return b"".join(((command + "\n" + header_lines(headers, esc) + "\n").encode("utf-8"),
                     body, b"\x00\n"))


def header_lines(headers, version: str = "1.2") -> str:
    """'name:value\n' for each header, escaped for `version` (a dict or (name, value) pairs)."""
    items = headers.items() if isinstance(headers, dict) else headers
    if version == "1.0":
        return "".join([f"{name}:{value}\n" for name, value in items])
    n = len(items)
    if not n:
        return ""
    joined = "\x01".join([f"{name}\x00{value}" for name, value in items])
    if joined.count("\x00") != n or joined.count("\x01") != n - 1:
        # a header holds \x00 or \x01 itself: escape header by header
        return "".join([f"{escape_header(str(name), version)}:{escape_header(str(value), version)}\n"
                        for name, value in items])
    # str.replace scans in C at memchr speed; a translate table with multi-character
    # replacements walks the string one dict lookup per character
    if "\\" in joined:
        joined = joined.replace("\\", "\\\\")
    if "\n" in joined:
        joined = joined.replace("\n", "\\n")
    if "\r" in joined and version != "1.1":
        joined = joined.replace("\r", "\\r")
    return joined.replace(":", "\\c").replace("\x00", ":").replace("\x01", "\n") + "\n"


def _serialize_slow(command, items, body, esc):
    lines = [command]
    for name, value in items:
        if not isinstance(value, str):
            value = str(value)
        lines.append(f"{escape_header(name, esc)}:{escape_header(value, esc)}")
    lines.append("\n")
    return b"".join(("\n".join(lines).encode("utf-8"), body, b"\x00\n"))


# --- parser ----------------------------------------------------------------

def _decode_lines(lines, version: str, escaped: bool) -> dict[str, str]:
    """Header lines (EOLs gone) as a dict: the first occurrence of a name wins.  In 1.0 (as
    ActiveMQ) a value is trimmed and unescaped, a name taken as it is."""
    headers: dict[str, str] = {}
    v10 = version == "1.0"
    for line in lines:
        name, _, value = line.partition(":")
        if v10:
            value = value.strip()
            if escaped and "\\" in value:
                value = unescape_header(value, version)
        elif escaped and ("\\" in name or "\\" in value):
            name, value = unescape_header(name, version), unescape_header(value, version)
        if name not in headers:
            headers[name] = value
    return headers


_CR = 0x0D
_CONTENT_LENGTH = re.compile(r"\s*([0-9]+)\s*", re.ASCII)

# Parser phases for the frame at the front of the buffer.
_COMMAND, _HEADERS, _BODY = range(3)


def _excerpt(raw) -> str:
    """At most ~100 chars of raw bytes, safe to put on one log line."""
    text = bytes(raw[:100]).decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text + ("..." if len(raw) > 100 else "")


def _utf8(raw, what: str) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(f"Invalid UTF-8 in {what} [{_excerpt(raw)}]") from None


# a command line holds printable text; control bytes mean binary data (TLS on a plain port,
# garbage): refused at once instead of waiting for a line end that may never come
_CONTROL = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x1f\x7f]")
_NOT_STOMP = "Not a STOMP frame: binary data where a command was expected (TLS on a plain port?)"


class FrameParser:
    """Incremental STOMP frame parser.

    The buffer always starts with the frame being assembled; it is trimmed
    once per frame (deleting from the front of a bytearray is cheap in
    CPython). Offsets into it are remembered across calls, and ``_scan``
    records how far the current delimiter search got, so bytes trickling in
    are never rescanned: total work is linear in the stream length.
    """

    def __init__(self, limits: Limits | None = None, commands=None):
        self.limits = limits or Limits()
        # the commands this side accepts: anything else is refused as soon as its command
        # line is complete, without waiting for a body that may never come (an HTTP request)
        self.commands = commands
        self.version = "1.0"
        self._buf = bytearray()
        self._error: FrameError | None = None
        # the command and header lines of recent whole frames, decoded: a producer repeats
        # the same ones frame after frame (with the version they were decoded for)
        self._heads: dict[str, tuple] = {}
        self._heads_version = None
        self._seen = None  # the last lines decoded (kept once they come twice in a row)
        self._new_frame()

    def _new_frame(self):
        self._phase = _COMMAND
        self._scan = 0  # delimiter search resumes here
        self._pos = 0  # start of the next line (command/header phases)
        self._command = ""
        self._unknown: str | None = None  # an unknown command, reported once its headers are read
        self._lines: list[tuple[int, int]] = []  # raw header lines, EOL excluded
        self._headers: dict[str, str] = {}
        self._headers_version = ""
        self._body_start = 0
        self._content_length: int | None = None

    def feed(self, data: bytes) -> None:
        if self._error is None:  # after an error the connection is dead: don't hoard bytes
            self._buf += data

    def next_frame(self) -> Frame | None:
        if self._error is not None:
            raise self._error
        if self._phase == _COMMAND and self._pos == 0 and self._scan == 0:
            frame = self._whole_frame()  # (never raises: anything wrong is left to the rest)
            if frame is not None:
                return frame
        try:
            return self._next_frame()
        except FrameError as e:
            self._error = e
            self._buf = bytearray()
            raise

    def _head(self, text: str):
        """(command, headers) of a whole frame's command and header lines, or None when the
        line-by-line parser must take the frame (see _whole_frame)."""
        if not text.isascii() or "\r" in text:
            return None
        lines = text.split("\n")
        command = lines[0]
        limits = self.limits
        commands = self.commands
        if commands is not None:
            if command not in commands:  # (a known command is printable)
                return None
        elif not command.isprintable():
            return None
        if (len(command) > limits.max_command_length or len(lines) > limits.max_headers + 1
                or (len(text) > limits.max_header_length
                    and len(max(lines, key=len)) > limits.max_header_length)):
            return None
        version = self.version
        if version == "1.0" or "\\" in text:
            return command, _decode_lines(lines[1:], version, command not in _NOT_ESCAPED)
        headers = {}  # nothing to strip or unescape: _decode_lines, in short
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name not in headers:
                headers[name] = value
        return command, headers

    def _whole_frame(self) -> Frame | None:
        """The frame at the front of the buffer when it is all there and plain (LF line ends,
        ASCII headers, within the limits, a known command), parsed in a few C-speed passes;
        else None, and the phase-by-phase parser below takes it (and says what is wrong).
        Most frames arrive whole in one read: this is their path."""
        buf = self._buf
        start = 0
        while start < len(buf) and buf[start] == 10:  # heart-beats (or the EOL after a NUL)
            start += 1
        end = buf.find(b"\n\n", start)
        if end < 0:
            return None
        text = buf[start:end].decode("latin-1")
        head = self._heads.get(text)
        if head is not None and self._heads_version == self.version:
            command, headers = head[0], dict(head[1])  # (a copy: a frame's headers are its own)
        else:
            head = self._head(text)
            if head is None:
                return None
            command, headers = head
            if text == self._seen:  # the second time in a row: worth keeping
                if len(self._heads) >= 32 or self._heads_version != self.version:
                    self._heads.clear()
                    self._heads_version = self.version
                self._heads[text] = (command, dict(headers))
            self._seen = text
        limits = self.limits
        body_start = end + 2
        value = headers.get("content-length")
        if value is not None:
            if not value.isdigit() or not value.isascii():
                return None
            stop = body_start + int(value)
            if len(buf) <= stop or buf[stop] != 0 or stop - body_start > limits.max_body_length:
                return None
        else:
            stop = buf.find(b"\x00", body_start)
            if stop < 0 or stop - body_start > limits.max_body_length:
                return None
        frame = Frame(command, headers, bytes(buf[body_start:stop]))
        del buf[:stop + 1]
        return frame

    # Each phase returns early with None when it needs more bytes, leaving
    # its progress in the instance so the next call picks up where it stopped.
    def _next_frame(self) -> Frame | None:
        limits = self.limits
        if self._phase == _COMMAND:
            while True:
                line = self._line(limits.max_command_length, "command length")
                if line is None:
                    self._drop_heartbeats()
                    if _CONTROL.search(self._buf, self._pos):
                        raise FrameError(_NOT_STOMP)  # binary data will never make a frame
                    return None
                start, end = line
                if end > start:
                    break
                # An empty line between frames is a heart-beat.
            if _CONTROL.search(self._buf, start, end):
                raise FrameError(_NOT_STOMP)
            self._command = _utf8(self._buf[start:end], "command")
            if self.commands is not None and self._command not in self.commands:
                # read its headers still (not its body): the ERROR names its receipt, as
                # ActiveMQ's does
                self._unknown = _excerpt(self._buf[start:end])
            self._drop_heartbeats(start)
            self._phase = _HEADERS

        if self._phase == _HEADERS:
            while True:
                line = self._line(limits.max_header_length, "header length")
                if line is None:
                    return None
                start, end = line
                if end == start:
                    break
                # A line without ':' is a header with an empty value, as ActiveMQ reads it.
                if len(self._lines) >= limits.max_headers:
                    raise FrameError(f"The maximum number of headers was exceeded ({limits.max_headers})")
                self._lines.append((start, end))
            # content-length is only known after decoding, so decode now.
            self._decode_headers()
            if self._unknown is not None:
                raise FrameError("Unknown STOMP action: %s" % self._unknown,
                                 receipt=self._headers.get("receipt"))
            self._content_length = self._parse_content_length()
            self._body_start = self._scan = self._pos
            self._phase = _BODY

        buf = self._buf
        start, length = self._body_start, self._content_length
        if length is not None:
            end = start + length
            if len(buf) <= end:
                return None
            if buf[end] != 0:
                # (ActiveMQ's words)
                raise FrameError("content-length bytes were read and there was no trailing null byte")
        else:
            end = buf.find(b"\x00", self._scan)
            if end < 0:
                self._scan = len(buf)
                self._check_body_length(len(buf) - start)
                return None
            self._check_body_length(end - start)

        if self._headers_version != self.version:
            # The session changed version while this frame was still arriving;
            # the frame returned must reflect the version current now.
            self._decode_headers()
        frame = Frame(self._command, self._headers, bytes(buf[start:end]))
        del buf[: end + 1]
        self._new_frame()
        return frame

    def _line(self, limit: int, what: str) -> tuple[int, int] | None:
        """Find the line starting at ``_pos``: (start, end) without its EOL, or None."""
        buf, start = self._buf, self._pos
        nl = buf.find(b"\n", self._scan)
        if nl < 0:
            self._scan = len(buf)
            # A trailing CR may be half of a CRLF, so it doesn't count yet.
            pending = len(buf) - start - (len(buf) > start and buf[-1] == _CR)
            if pending > limit:
                self._too_long(what, limit)
            return None
        end = nl - 1 if nl > start and buf[nl - 1] == _CR else nl
        if end - start > limit:
            self._too_long(what, limit)
        self._pos = self._scan = nl + 1
        return start, end

    def _drop_heartbeats(self, upto: int | None = None):
        """Discard consumed heart-beat EOLs so an idle peer can't grow the buffer."""
        if upto is None:
            upto = self._pos
        if upto:
            del self._buf[:upto]
            self._pos -= upto
            self._scan -= upto

    @staticmethod
    def _too_long(what: str, limit: int):
        raise FrameError(f"The maximum {what} was exceeded ({limit} bytes)")

    def _check_body_length(self, length: int):
        if length > self.limits.max_body_length:
            self._too_long("data length", self.limits.max_body_length)

    def _decode_headers(self):
        version = self.version
        escaped = self._command not in _NOT_ESCAPED
        headers: dict[str, str] = {}
        lines = self._lines
        if lines:
            # the header lines are contiguous: decode them in one go, then split
            text = _utf8(self._buf[lines[0][0]:lines[-1][1]], "header line")
            parts = text.split("\n")
            if "\r" in text:
                # a CR before each "\n" belongs to the line break (the last line's break is
                # outside the region: its text is already complete)
                parts = [p[:-1] if p.endswith("\r") else p for p in parts[:-1]] + parts[-1:]
            headers = _decode_lines(parts, version, escaped)
        self._headers, self._headers_version = headers, version

    def _parse_content_length(self) -> int | None:
        value = self._headers.get("content-length")
        if value is None:
            return None
        m = _CONTENT_LENGTH.fullmatch(value)
        if m is None:
            raise FrameError("Specified content-length is not a valid integer")
        length = int(m.group(1))
        self._check_body_length(length)
        return length
