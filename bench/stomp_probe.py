#!/usr/bin/env python3
"""Raw-socket STOMP wire probe.

usage: stomp_probe.py HOST PORT [--only=PREFIX[,PREFIX...]] [--list]

Runs a fixed list of STOMP scenarios (connect variants, protocol errors,
framing errors, ack modes, browsers, transactions, durable subscriptions,
temp queues, wildcards, prefetch, groups, expiry, heart-beats, receipts,
selectors) against a broker, each on fresh connections with unique
destination names, and prints every frame the broker sends back.

The output is normalized so that two runs (or two brokers) can be diffed:
  * the per-run random token is printed as <R>
  * message-id / ack values -> <ID1>, <ID2>, ... numbered per scenario in order
    of first appearance (so "ack == message-id" and "same message redelivered"
    stay visible)
  * session -> <SESSION>, server -> <SERVER>, timestamp -> <TS>,
    non-zero expires -> <EXP_SENT> (if equal to what we sent) or <EXP>
  * ActiveMQ-style ids (ID:host-port-time-n:n:...) -> <AMQ-ID>, 13-digit
    epoch-millis numbers -> <EPOCHMS>
  * ERROR bodies: first line only; ERROR content-length -> <LEN>
Timing measurements (heart-beat scenarios only) are rounded.

Stdlib only (socket, time + re/sys/random/os for plumbing).
"""
import random
import re
import socket
import sys
import time

HOST = "127.0.0.1"
PORT = 61613
R = "zq" + "".join(random.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(6))

RECEIPT_TIMEOUT = 2.0
CLOSE_CHECK = 1.0

_AMQ_ID = re.compile(r"ID(?::|\\c)[A-Za-z0-9_.\-]+?-\d+-\d+-\d+(?:(?::|\\c)-?\d+)*")
_TCP = re.compile(r"(tcp://[0-9.]+:)\d+")
_EPOCH = re.compile(r"(?<!\d)1[5-9]\d{11}(?!\d)")


def now_ms():
    return int(time.time() * 1000)


def esc_line(s):
    """Show a raw header/command line: control chars made visible, STOMP
    escapes (backslash sequences) left exactly as on the wire."""
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\r":
            out.append("<CR>")
        elif o < 32 or o == 127:
            out.append("<0x%02x>" % o)
        else:
            out.append(ch)
    return "".join(out)


class Frame(object):
    def __init__(self, cmd, lines, body, trailer, t, bad=None):
        self.cmd = cmd
        self.lines = lines  # raw header lines (decoded, CR kept)
        self.headers = []
        for ln in lines:
            k, sep, v = ln.partition(":")
            self.headers.append((k, v if sep else None))
        self.body = body
        self.trailer = trailer
        self.t = t
        self.bad = bad

    def get(self, name, default=None):
        for k, v in self.headers:
            if k.rstrip("\r") == name:
                return v.rstrip("\r") if v is not None else v
        return default

    def raw_text(self):
        return self.cmd + "\n" + "\n".join(self.lines) + "\n" + self.body.decode("utf-8", "replace")


def parse_one(buf):
    """Return (event, rest) or (None, buf) if incomplete.
    event is ('eol',) or ('frame', cmd, lines, body, trailer, bad)."""
    if buf.startswith(b"\n"):
        return ("eol",), buf[1:]
    if buf.startswith(b"\r\n"):
        return ("eol",), buf[2:]
    if buf == b"\r":
        return None, buf
    pos = 0
    lines = []
    while True:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            return None, buf
        line = buf[pos:nl]
        pos = nl + 1
        if line.endswith(b"\r"):
            line_s = line.decode("utf-8", "backslashreplace")
        else:
            line_s = line.decode("utf-8", "backslashreplace")
        if not lines:
            lines.append(line_s)  # command
            continue
        if line in (b"", b"\r"):
            break
        lines.append(line_s)
    cmd = lines[0]
    hdr_lines = lines[1:]
    clen = None
    for ln in hdr_lines:
        k, sep, v = ln.partition(":")
        if k == "content-length" and sep:
            try:
                clen = int(v.strip())
            except ValueError:
                clen = None
            break
    bad = None
    if clen is not None and clen >= 0:
        if len(buf) < pos + clen + 1:
            return None, buf
        body = buf[pos:pos + clen]
        end = pos + clen
        if buf[end:end + 1] != b"\x00":
            bad = "no NUL after content-length bytes"
            nul = buf.find(b"\x00", end)
            if nul < 0:
                return None, buf
            end = nul
    else:
        nul = buf.find(b"\x00", pos)
        if nul < 0:
            return None, buf
        body = buf[pos:nul]
        end = nul
    rest = buf[end + 1:]
    trailer = "NUL"
    if rest.startswith(b"\r\n"):
        trailer = "NUL+CRLF"
        rest = rest[2:]
    elif rest.startswith(b"\n"):
        trailer = "NUL+LF"
        rest = rest[1:]
    return ("frame", cmd, hdr_lines, body, trailer, bad), rest


class Scenario(object):
    def __init__(self, sid, title):
        self.sid = sid
        self.title = title
        self.tag = sid.replace(".", "_") + "-" + R
        self.out = []
        self.conns = []
        self.idmap = {}
        self._idre = None
        self.sent_expires = set()

    # -- naming -------------------------------------------------------
    def d(self, base):
        return "%s-%s-%s" % (base, self.sid.replace(".", "_"), R)

    # -- output -------------------------------------------------------
    def norm(self, s):
        if self.idmap:
            if self._idre is None:
                keys = sorted(self.idmap, key=len, reverse=True)
                self._idre = re.compile("|".join("(?:%s)(?![0-9A-Za-z])" % re.escape(k) for k in keys))
            s = self._idre.sub(lambda m: self.idmap[m.group(0)], s)
        s = s.replace(R, "<R>")
        s = _AMQ_ID.sub("<AMQ-ID>", s)
        s = _TCP.sub(r"\1<PORT>", s)
        s = _EPOCH.sub("<EPOCHMS>", s)
        return s

    def log(self, s):
        self.out.append(self.norm(s))

    def note(self, s):
        self.log("    NOTE: " + s)

    def idtok(self, v):
        """Map an opaque id (as on the wire, possibly STOMP-escaped) to <IDn>.
        The escaped and unescaped spellings share one token."""
        plain = v.replace("\\c", ":").replace("\\\\", "\\")
        tok = self.idmap.get(v) or self.idmap.get(plain)
        if tok is None:
            self.ntok = getattr(self, "ntok", 0) + 1
            tok = "<ID%d>" % self.ntok
        for k in (v, plain):
            if k not in self.idmap:
                self.idmap[k] = tok
                self._idre = None
        return tok

    def fmt_header(self, cmd, k, v):
        if v is None:
            return esc_line(k) + "   <-- (no colon)"
        kk = k
        vv = v.rstrip("\r")
        cr = "<CR>" if v.endswith("\r") else ""
        if kk in ("message-id", "ack"):
            vv = self.idtok(vv)
        elif kk == "session":
            vv = "<SESSION>"
        elif kk == "server":
            vv = "<SERVER>"
        elif kk == "timestamp" and vv not in ("", "0"):
            vv = "<TS>"
        elif kk == "expires" and vv not in ("", "0"):
            vv = "<EXP_SENT>" if vv in self.sent_expires else "<EXP>"
        elif kk == "content-length" and cmd == "ERROR":
            vv = "<LEN>"
        line = esc_line(kk) + ":" + esc_line(vv) + cr
        if len(line) > 300:
            line = line[:300] + "...(%d chars)" % len(line)
        return line

    def fmt_frame(self, label, f):
        self.log("%s <<< %s" % (label, esc_line(f.cmd)))
        for k, v in f.headers:
            self.log("        " + self.fmt_header(f.cmd, k, v))
        if f.cmd == "ERROR":
            txt = f.body.decode("utf-8", "replace")
            first = txt.split("\n", 1)[0]
            more = " [+more lines omitted]" if "\n" in txt.rstrip("\n") else ""
            self.log("        body(first line)=%r%s  [%s]" % (first[:300], more, f.trailer))
        else:
            b = f.body
            extra = "" if len(b) <= 300 else " ...(%d bytes)" % len(b)
            self.log("        body=%r%s  [%s]" % (b[:300], extra, f.trailer))
        if f.bad:
            self.note("parse problem: " + f.bad)

    # -- connections --------------------------------------------------
    def prod(self, version="1.2"):
        """A separate producer connection 'P' (so that MESSAGE/RECEIPT interleaving
        on the consumer connection does not depend on broker-side races)."""
        if getattr(self, "_prod", None) is None:
            self._prod = self.conn("P")
            self._prod.connect(version=version)
        return self._prod

    def conn(self, label):
        c = Conn(self, label)
        self.conns.append(c)
        return c

    def finish(self):
        """Check (concurrently, ~1 s total) whether each connection is closed by the broker."""
        deadline = time.time() + CLOSE_CHECK
        for c in self.conns:
            if c.closed is None and not c.client_closed:
                while c.closed is None and time.time() < deadline:
                    c.pump(max(0.01, deadline - time.time()))
        for c in self.conns:
            if c.client_closed and c.closed is None:
                self.log("%s: (closed by client)" % c.label)
            elif c.closed:
                self.log("%s: closed by broker: yes (%s)" % (c.label, c.closed))
            else:
                self.log("%s: closed by broker: no (still open %.0fs after last step)" % (c.label, CLOSE_CHECK))
        for c in self.conns:
            try:
                c.sock.close()
            except OSError:
                pass


class Conn(object):
    def __init__(self, sc, label):
        self.sc = sc
        self.label = label
        self.sock = socket.create_connection((HOST, PORT), 3)
        self.buf = b""
        self.frames = []
        self.eols = []  # receive times of heart-beat EOLs
        self.closed = None
        self.client_closed = False
        self.rc = 0
        self.filter = None  # callable(frame)->bool: frames failing it are not logged
        self.hidden = 0
        self.quiet_eol = False
        self.version = None

    # -- sending ------------------------------------------------------
    def rid(self):
        self.rc += 1
        return "r%d" % self.rc

    def sendraw(self, data, desc=None):
        if desc is None:
            r = repr(data)
            if len(r) > 200:
                r = r[:200] + "...(%d bytes total)" % len(data)
            desc = "RAW " + r
        self.sc.log("%s >>> %s" % (self.label, desc))
        try:
            self.sock.sendall(data)
            return True
        except OSError as e:
            self.sc.log("%s: send failed: %s" % (self.label, type(e).__name__))
            if self.closed is None:
                self.closed = "send failed: " + type(e).__name__
            return False

    def send(self, cmd, *hdrs, **kw):
        """send(cmd, 'k:v', ..., body=b'', receipt=False) -> receipt id or None"""
        body = kw.get("body", b"")
        if isinstance(body, str):
            body = body.encode("utf-8")
        hdrs = list(hdrs)
        rid = None
        if kw.get("receipt"):
            rid = self.rid()
            hdrs.append("receipt:" + rid)
        for h in hdrs:
            if h.startswith("expires:"):
                self.sc.sent_expires.add(h[8:])
        data = (cmd + "\n" + "".join(h + "\n" for h in hdrs) + "\n").encode("utf-8") + body + b"\x00"
        shown = [esc_line(cmd)] + [esc_line(h) for h in hdrs]
        if body:
            b = repr(body)
            shown.append("body=" + (b if len(b) <= 120 else b[:120] + "..."))
        self.sendraw(data, " | ".join(shown))
        return rid

    # -- receiving ----------------------------------------------------
    def pump(self, timeout):
        if self.closed is not None:
            return False
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError as e:
            self.closed = type(e).__name__
            self.sc.log("%s: *** connection closed by broker (%s)" % (self.label, self.closed))
            self._parse(final=True)
            return False
        t = time.time()
        if not data:
            self.closed = "EOF"
            self._parse(t, final=True)
            self.sc.log("%s: *** connection closed by broker (EOF)" % self.label)
            return False
        self.buf += data
        # ActiveMQ may write the EOL that follows a frame's NUL separately; give it
        # 50 ms to arrive so it is attributed to the frame and not logged as a heart-beat.
        while self.buf.endswith(b"\x00"):
            self.sock.settimeout(0.05)
            try:
                more = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not more:
                break  # EOF is noticed on the next pump
            self.buf += more
        self._parse(t)
        return True

    def _parse(self, t=None, final=False):
        t = t or time.time()
        while self.buf:
            ev, rest = parse_one(self.buf)
            if ev is None:
                break
            self.buf = rest
            if ev[0] == "eol":
                self.eols.append(t)
                if not self.quiet_eol:
                    self.sc.log("%s <<< EOL (heart-beat)" % self.label)
                continue
            f = Frame(ev[1], ev[2], ev[3], ev[4], t, ev[5])
            self.frames.append(f)
            if self.filter is not None and not self.filter(f):
                self.hidden += 1
                continue
            self.sc.fmt_frame(self.label, f)
        if final and self.buf:
            r = repr(self.buf)
            self.sc.log("%s: unparsed trailing bytes at close: %s" % (self.label, r[:300]))
            self.buf = b""

    def wait(self, pred, timeout=RECEIPT_TIMEOUT, start=0):
        deadline = time.time() + timeout
        while True:
            for f in self.frames[start:]:
                if pred(f):
                    return f
            if self.closed is not None:
                return None
            rem = deadline - time.time()
            if rem <= 0:
                return None
            self.pump(rem)

    def receipt(self, rid, timeout=RECEIPT_TIMEOUT, quiet=False):
        f = self.wait(lambda f: f.cmd in ("RECEIPT", "ERROR") and f.get("receipt-id") == rid, timeout)
        if f is None and not quiet:
            if self.closed is not None:
                self.sc.log("%s: (no RECEIPT/ERROR for %s; connection closed)" % (self.label, rid))
            else:
                self.sc.log("%s: (no RECEIPT/ERROR for %s within %.1fs)" % (self.label, rid, timeout))
        return f

    def mark(self):
        return len(self.frames)

    def msgs(self, since=0):
        return [f for f in self.frames[since:] if f.cmd == "MESSAGE"]

    def expect(self, n, timeout=1.0, since=None):
        """Wait until n MESSAGE frames arrived since `since`; returns list."""
        if since is None:
            since = self.mark()
        deadline = time.time() + timeout
        while len(self.msgs(since)) < n and self.closed is None and time.time() < deadline:
            self.pump(deadline - time.time())
        got = self.msgs(since)
        if len(got) < n:
            self.sc.log("%s: (%d MESSAGE frame(s) within %.1fs, wanted %d)" % (self.label, len(got), timeout, n))
        return got

    def drain(self, timeout=0.5):
        """Collect (and log) whatever arrives within timeout."""
        m = self.mark()
        deadline = time.time() + timeout
        while self.closed is None and time.time() < deadline:
            self.pump(deadline - time.time())
        return self.frames[m:]

    def drain_note(self, timeout=0.5, what="frames"):
        got = self.drain(timeout)
        if not got:
            self.sc.log("%s: (nothing received within %.1fs)" % (self.label, timeout))
        return got

    # -- helpers ------------------------------------------------------
    def connect(self, *hdrs, **kw):
        version = kw.get("version", "1.2")
        cmd = kw.get("cmd", "CONNECT")
        h = []
        if version is not None:
            h.append("accept-version:" + version)
        if kw.get("host", True):
            h.append("host:localhost")
        h.extend(hdrs)
        m = self.mark()
        self.send(cmd, *h)
        f = self.wait(lambda f: f.cmd in ("CONNECTED", "ERROR"), 3.0, start=m)
        if f is None:
            self.sc.log("%s: (no CONNECTED/ERROR within 3s)" % self.label)
        elif f.cmd == "CONNECTED":
            self.version = f.get("version")
        return f

    def sub(self, dest, *hdrs, **kw):
        h = ["destination:" + dest] + list(hdrs)
        if not any(x.startswith("id:") for x in hdrs) and kw.get("id", "1") is not None:
            h.insert(0, "id:" + kw.get("id", "1"))
        rid = self.send("SUBSCRIBE", *h, receipt=True)
        return self.receipt(rid)

    def sendmsg(self, dest, body, *hdrs, **kw):
        rid = self.send("SEND", "destination:" + dest, *hdrs, body=body, receipt=kw.get("receipt", True))
        if rid:
            return self.receipt(rid)

    def alive(self):
        """Send a harmless frame with receipt and report whether the connection is still usable."""
        if self.closed is not None:
            self.sc.log("%s: ALIVE? no (connection already closed: %s)" % (self.label, self.closed))
            return False
        rid = self.send("SEND", "destination:/topic/alive-" + R, body="ping", receipt=True)
        f = self.receipt(rid, 1.5, quiet=True)
        if f is not None and f.cmd == "RECEIPT":
            self.sc.log("%s: ALIVE? yes (RECEIPT %s received)" % (self.label, rid))
            return True
        self.sc.log("%s: ALIVE? no (%s)" % (self.label, "got ERROR" if f is not None else
                                             ("closed: %s" % self.closed if self.closed else "no receipt in 1.5s")))
        return False

    def disconnect(self, receipt=True):
        rid = self.send("DISCONNECT", receipt=receipt)
        if rid:
            self.receipt(rid)
        # wait briefly for the close
        deadline = time.time() + 1.0
        while self.closed is None and time.time() < deadline:
            self.pump(deadline - time.time())
        if self.closed is None:
            self.sc.log("%s: (still open 1s after DISCONNECT)" % self.label)
        self.client_closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def ack_of(self, f):
        """Value to use in ACK/NACK for a MESSAGE frame, per negotiated version."""
        if self.version == "1.2":
            return ["id:" + (f.get("ack") or "")]
        h = ["message-id:" + (f.get("message-id") or "")]
        if self.version == "1.1":
            h.append("subscription:" + (f.get("subscription") or ""))
        return h


# ======================================================================
SCENARIOS = []


def scenario(sid, title):
    def deco(fn):
        SCENARIOS.append((sid, title, fn))
        return fn
    return deco


def new_conn(sc, label, *hdrs, **kw):
    c = sc.conn(label)
    c.connect(*hdrs, **kw)
    return c


def dlq_check(sc, label="DLQ", timeout=1.0):
    """Consume ActiveMQ.DLQ (ack auto) and show only messages belonging to this scenario."""
    c = sc.conn(label)
    c.connect()
    tag = sc.tag.encode()
    c.filter = lambda f: f.cmd != "MESSAGE" or tag in f.body or sc.tag in "\n".join(f.lines)
    sc.log("%s: subscribing to /queue/ActiveMQ.DLQ; only messages of this scenario are shown" % label)
    c.sub("/queue/ActiveMQ.DLQ", "id:dlq", "ack:auto")
    m = c.mark()
    deadline = time.time() + timeout
    while c.closed is None and time.time() < deadline:
        c.pump(deadline - time.time())
    mine = [f for f in c.msgs(m) if c.filter(f)]
    sc.log("%s: %d message(s) of this scenario in ActiveMQ.DLQ" % (label, len(mine)))
    if c.hidden:
        sys.stderr.write("[%s] skipped %d unrelated DLQ message(s)\n" % (sc.sid, c.hidden))
    c.disconnect()
    return mine


# ---------------------------------------------------------------- 1 CONNECT
def _connect_case(sid, title, *hdrs, **kw):
    @scenario(sid, title)
    def _(sc):
        c = sc.conn("A")
        f = c.connect(*hdrs, **kw)
        if f is not None and f.cmd == "CONNECTED":
            c.drain(0.3)
            c.alive()


_connect_case("1.01", "CONNECT accept-version:1.0,1.1,1.2", version="1.0,1.1,1.2")
_connect_case("1.02", "CONNECT without accept-version (STOMP 1.0)", version=None)
_connect_case("1.03", "CONNECT accept-version:1.3 only", version="1.3")
_connect_case("1.04", "CONNECT accept-version:1.1,1.9", version="1.1,1.9")
_connect_case("1.05", "CONNECT heart-beat:0,0", "heart-beat:0,0")
_connect_case("1.06", "CONNECT heart-beat:1000,2000", "heart-beat:1000,2000")
_connect_case("1.07", "CONNECT heart-beat:a,b (malformed)", "heart-beat:a,b")
_connect_case("1.08", "CONNECT with receipt:c-receipt", "receipt:c-receipt")
_connect_case("1.09", "CONNECT with client-id", "client-id:cid-1_09-" + R)
_connect_case("1.10", "STOMP command instead of CONNECT (accept-version:1.2)", cmd="STOMP")
_connect_case("1.11", "STOMP command without accept-version", cmd="STOMP", version=None)
_connect_case("1.12", "CONNECT accept-version:1.2 without host header", host=False)
_connect_case("1.13", "CONNECT with login/passcode guest/guest", "login:guest", "passcode:guest")


# ---------------------------------------------------------------- 2 command/state errors
@scenario("2.01", "SEND (with receipt) before CONNECT")
def _(sc):
    c = sc.conn("A")
    rid = c.send("SEND", "destination:" + sc.d("/queue/pre"), body="x", receipt=True)
    c.receipt(rid)
    c.drain(0.5)
    if c.closed is None:
        sc.note("connection still open; now sending CONNECT")
        c.connect()
        c.alive()


@scenario("2.02", "second CONNECT on a live connection")
def _(sc):
    c = new_conn(sc, "A")
    c.connect()
    c.drain(0.5)
    c.alive()


def _bad_cmd(sid, title, cmd):
    @scenario(sid, title)
    def _(sc):
        s_ = new_conn(sc, "S")
        s_.sub(sc.d("/queue/x"), "id:1")
        c = new_conn(sc, "A")
        rid = c.send(cmd, "destination:" + sc.d("/queue/x"), body="x", receipt=True)
        c.receipt(rid)
        c.drain(0.3)
        sc.log("S: was anything delivered to the subscriber?")
        s_.drain_note(0.5)
        c.alive()


_bad_cmd("2.03", "unknown command FOO (with receipt)", "FOO")
_bad_cmd("2.04", "lowercase 'send' (with destination+receipt)", "send")
_bad_cmd("2.05", "command SENDX (with destination+receipt)", "SENDX")


# ---------------------------------------------------------------- 3 MESSAGE header sets
def _roundtrip(sid, title, *hdrs, **kw):
    @scenario(sid, title)
    def _(sc):
        version = kw.get("version", "1.2")
        c = new_conn(sc, "A", version=version)
        q = sc.d("/queue/hdr")
        c.sub(q, "id:0", "ack:auto")
        m = c.mark()
        extra = kw.get("extra")
        h = [x(sc) if callable(x) else x for x in hdrs]
        if kw.get("raw"):
            sc.prod(version).sendraw(kw["raw"](sc, q))
        else:
            sc.prod(kw.get("pversion", version)).sendmsg(q, kw.get("body", "hello"), *h)
        c.expect(1, 1.5, since=m)
        c.drain(0.2)


_roundtrip("3.01", "plain text body")
_roundtrip("3.02", "content-length:5", "content-length:5")
_roundtrip("3.03", "persistent:true", "persistent:true")
_roundtrip("3.04", "priority:9", "priority:9")
_roundtrip("3.05", "custom headers foo:bar weight:10", "foo:bar", "weight:10")
_roundtrip("3.06", "correlation-id, type, reply-to, expires(now+60s)",
           "correlation-id:corr-1", "type:mytype", lambda sc: "reply-to:" + sc.d("/queue/r"),
           lambda sc: "expires:%d" % (now_ms() + 60000))
_roundtrip("3.07", "escaped header 'a\\cb:c\\\\d\\ne' on STOMP 1.2", "a\\cb:c\\\\d\\ne", version="1.2")
_roundtrip("3.08", "escaped header 'a\\cb:c\\\\d\\ne' on STOMP 1.1", "a\\cb:c\\\\d\\ne", version="1.1")
_roundtrip("3.09", "escaped header 'a\\cb:c\\\\d\\ne' on STOMP 1.0", "a\\cb:c\\\\d\\ne", version=None)
_roundtrip("3.09b", "escaped header sent on STOMP 1.0, received on STOMP 1.2", "a\\cb:c\\\\d\\ne",
           version="1.2", pversion=None)
_roundtrip("3.09c", "escaped header sent on STOMP 1.2, received on STOMP 1.0", "a\\cb:c\\\\d\\ne",
           version=None, pversion="1.2")
_roundtrip("3.10", "binary body with NUL + content-length:5", "content-length:5", body=b"a\x00b\x01c")
_roundtrip("3.11", "content-type:application/json", "content-type:application/json", body='{"a":1}')
_roundtrip("3.12", "repeated header foo:1 then foo:2", "foo:1", "foo:2")
_roundtrip("3.13", "header value with leading/trailing spaces 'sp: x '", "sp: x ")
_roundtrip("3.14", "frame with CRLF line endings", raw=lambda sc, q: (
    "SEND\r\ndestination:%s\r\nreceipt:crlf\r\n\r\nhello\x00" % q).encode())
_roundtrip("3.15", "empty body, content-length:0", "content-length:0", body=b"")
_roundtrip("3.16", "UTF-8 header and body", "h\u00e9:v\u00e4l", body="b\u00f6dy \u20ac")


# ---------------------------------------------------------------- 4 protocol errors
def _err_case(sid, title, fn, version="1.2"):
    @scenario(sid, title)
    def _(sc):
        c = new_conn(sc, "A", version=version)
        rid = fn(sc, c)
        if rid:
            c.receipt(rid)
        c.drain(0.3)
        c.alive()


_err_case("4.01", "SEND without destination", lambda sc, c: c.send("SEND", body="x", receipt=True))
def _odd_dest(sid, title, dest_fn):
    @scenario(sid, title)
    def _(sc):
        dest = dest_fn(sc)
        s_ = new_conn(sc, "S")
        s_.sub(dest, "id:same")
        s_.sub("/queue/" + dest.lstrip("/"), "id:q")
        s_.sub("/topic/" + dest.lstrip("/"), "id:t")
        c = new_conn(sc, "A")
        rid = c.send("SEND", "destination:" + dest, body="x", receipt=True)
        c.receipt(rid)
        c.drain(0.3)
        sc.log("S: was anything delivered to the subscriber?")
        s_.drain_note(0.5)
        c.alive()


_odd_dest("4.02", "SEND to 'foo' (no prefix); subscribed to 'foo', '/queue/foo', '/topic/foo'",
          lambda sc: "foo-" + sc.tag)
_odd_dest("4.03", "SEND to /bad/x; subscribed to '/bad/x', '/queue/bad/x', '/topic/bad/x'",
          lambda sc: sc.d("/bad/x"))
_err_case("4.04", "SUBSCRIBE without id (1.2)",
          lambda sc, c: c.send("SUBSCRIBE", "destination:" + sc.d("/queue/s"), receipt=True))
_err_case("4.05", "SUBSCRIBE without id (1.1)",
          lambda sc, c: c.send("SUBSCRIBE", "destination:" + sc.d("/queue/s"), receipt=True), version="1.1")


@scenario("4.06", "SUBSCRIBE without id (1.0), then SEND to it")
def _(sc):
    c = new_conn(sc, "A", version=None)
    q = sc.d("/queue/s")
    rid = c.send("SUBSCRIBE", "destination:" + q, receipt=True)
    c.receipt(rid)
    m = c.mark()
    sc.prod().sendmsg(q, "hello")
    c.expect(1, 1.0, since=m)
    c.alive()


_err_case("4.07", "SUBSCRIBE without destination", lambda sc, c: c.send("SUBSCRIBE", "id:1", receipt=True))
_err_case("4.08", "UNSUBSCRIBE unknown id", lambda sc, c: c.send("UNSUBSCRIBE", "id:nope", receipt=True))
_err_case("4.09", "UNSUBSCRIBE without id (1.2)", lambda sc, c: c.send("UNSUBSCRIBE", receipt=True))
_err_case("4.10", "ACK unknown id (1.2)", lambda sc, c: c.send("ACK", "id:nope", receipt=True))
_err_case("4.11", "ACK without id (1.2)", lambda sc, c: c.send("ACK", receipt=True))
_err_case("4.12", "NACK on 1.0 (message-id:nope)",
          lambda sc, c: c.send("NACK", "message-id:nope", receipt=True), version=None)


def _dup_begin(sc, c):
    c.receipt(c.send("BEGIN", "transaction:tx1", receipt=True))
    return c.send("BEGIN", "transaction:tx1", receipt=True)


_err_case("4.13", "BEGIN duplicate transaction", _dup_begin)
_err_case("4.14", "COMMIT unknown transaction", lambda sc, c: c.send("COMMIT", "transaction:nope", receipt=True))
_err_case("4.15", "ABORT unknown transaction", lambda sc, c: c.send("ABORT", "transaction:nope", receipt=True))
_err_case("4.16", "SEND with unknown transaction",
          lambda sc, c: c.send("SEND", "destination:" + sc.d("/queue/t"), "transaction:nope", body="x", receipt=True))
_err_case("4.17", "SUBSCRIBE bad selector 'a = '",
          lambda sc, c: c.send("SUBSCRIBE", "id:1", "destination:" + sc.d("/queue/s"), "selector:a = ", receipt=True))


@scenario("4.18", "SUBSCRIBE duplicate id (different destination), then SEND to both")
def _(sc):
    c = new_conn(sc, "A")
    c.sub(sc.d("/queue/s"), "id:1")
    c.receipt(c.send("SUBSCRIBE", "id:1", "destination:" + sc.d("/queue/s2"), receipt=True))
    sc.prod().sendmsg(sc.d("/queue/s"), "to-s")
    sc.prod().sendmsg(sc.d("/queue/s2"), "to-s2")
    c.drain(0.7)
    sc.log("A: UNSUBSCRIBE id:1 once")
    c.receipt(c.send("UNSUBSCRIBE", "id:1", receipt=True))
    sc.prod().sendmsg(sc.d("/queue/s"), "to-s-after")
    sc.prod().sendmsg(sc.d("/queue/s2"), "to-s2-after")
    c.drain(0.7)
    c.alive()
_err_case("4.19", "BEGIN without transaction header", lambda sc, c: c.send("BEGIN", receipt=True))
_err_case("4.20", "ACK on 1.1 with unknown message-id+subscription",
          lambda sc, c: c.send("ACK", "message-id:nope", "subscription:1", receipt=True), version="1.1")


# ---------------------------------------------------------------- 5 framing errors
def _frame_case(sid, title, rawfn):
    @scenario(sid, title)
    def _(sc):
        c = new_conn(sc, "A")
        c.sub(sc.d("/queue/f"), "id:1")
        m = c.mark()
        c.sendraw(rawfn(sc))
        c.drain(1.0)
        errs = [f for f in c.frames[m:] if f.cmd == "ERROR"]
        sc.note("ERROR frames received: %d" % len(errs))
        c.alive()


_frame_case("5.01", "content-length:-1", lambda sc: (
    "SEND\ndestination:%s\ncontent-length:-1\nreceipt:raw1\n\nhello\x00" % sc.d("/queue/f")).encode())
_frame_case("5.02", "content-length:abc", lambda sc: (
    "SEND\ndestination:%s\ncontent-length:abc\nreceipt:raw1\n\nhello\x00" % sc.d("/queue/f")).encode())
_frame_case("5.03", "content-length:2 but body 'hello' (no NUL after 2 bytes)", lambda sc: (
    "SEND\ndestination:%s\ncontent-length:2\nreceipt:raw1\n\nhello\x00" % sc.d("/queue/f")).encode())
_frame_case("5.04", "header line without colon", lambda sc: (
    "SEND\ndestination:%s\nbogusheader\nreceipt:raw1\n\nhello\x00" % sc.d("/queue/f")).encode())
_frame_case("5.05", "command line of 1100 bytes", lambda sc: ("S" * 1100 + "\nreceipt:raw1\n\n\x00").encode())
_frame_case("5.06", "header line of 11000 bytes", lambda sc: (
    "SEND\ndestination:%s\nfoo:%s\nreceipt:raw1\n\nhello\x00" % (sc.d("/queue/f"), "x" * 11000)).encode())
_frame_case("5.07", "header line of 1100 bytes (between limits)", lambda sc: (
    "SEND\ndestination:%s\nfoo:%s\nreceipt:raw1\n\nhello\x00" % (sc.d("/queue/f"), "x" * 1100)).encode())


# ---------------------------------------------------------------- 6 ack modes
def _send_n(sc, c, q, n, *hdrs, **kw):
    prefix = kw.get("prefix", "m")
    for i in range(1, n + 1):
        c.sendmsg(q, "%s%d-%s" % (prefix, i, sc.tag), *hdrs)


@scenario("6.01", "ack:client cumulative: send 3, ACK 2nd, DISCONNECT, reconnect")
def _(sc):
    q = sc.d("/queue/ack")
    a = new_conn(sc, "A")
    a.sub(q, "id:1", "ack:client")
    m = a.mark()
    _send_n(sc, sc.prod(), q, 3)
    got = a.expect(3, 1.5, since=m)
    if len(got) >= 2:
        a.receipt(a.send("ACK", *a.ack_of(got[1]), receipt=True))
    a.disconnect()
    b = new_conn(sc, "B")
    b.sub(q, "id:1", "ack:auto")
    b.drain(1.0)


@scenario("6.02", "ack:client-individual: send 3, ACK 2nd only, DISCONNECT, reconnect")
def _(sc):
    q = sc.d("/queue/ack")
    a = new_conn(sc, "A")
    a.sub(q, "id:1", "ack:client-individual")
    m = a.mark()
    _send_n(sc, sc.prod(), q, 3)
    got = a.expect(3, 1.5, since=m)
    if len(got) >= 2:
        a.receipt(a.send("ACK", *a.ack_of(got[1]), receipt=True))
    a.drain(0.3)
    a.disconnect()
    b = new_conn(sc, "B")
    b.sub(q, "id:1", "ack:auto")
    b.drain(1.0)


def _nack_ci(sid, title, persistent):
    @scenario(sid, title)
    def _(sc):
        q = sc.d("/queue/nack")
        a = new_conn(sc, "A")
        a.sub(q, "id:1", "ack:client-individual")
        m = a.mark()
        sc.prod().sendmsg(q, "nack-" + sc.tag, "persistent:%s" % ("true" if persistent else "false"), "foo:bar")
        got = a.expect(1, 1.5, since=m)
        if got:
            a.receipt(a.send("NACK", *a.ack_of(got[0]), receipt=True))
        a.drain(0.7)
        a.disconnect()
        b = new_conn(sc, "B")
        sc.log("B: re-subscribing to the original queue")
        b.sub(q, "id:1", "ack:auto")
        b.drain(0.7)
        b.disconnect()
        dlq_check(sc)


_nack_ci("6.03", "NACK in client-individual, persistent message -> DLQ?", True)
_nack_ci("6.04", "NACK in client-individual, non-persistent message -> DLQ?", False)


@scenario("6.05", "NACK in ack:client mode: send 3 persistent, NACK 2nd")
def _(sc):
    q = sc.d("/queue/nack")
    a = new_conn(sc, "A")
    a.sub(q, "id:1", "ack:client")
    m = a.mark()
    _send_n(sc, sc.prod(), q, 3, "persistent:true")
    got = a.expect(3, 1.5, since=m)
    if len(got) >= 2:
        a.receipt(a.send("NACK", *a.ack_of(got[1]), receipt=True))
    a.drain(0.7)
    a.disconnect()
    b = new_conn(sc, "B")
    sc.log("B: re-subscribing to the original queue")
    b.sub(q, "id:1", "ack:auto")
    b.drain(0.7)
    b.disconnect()
    dlq_check(sc)


@scenario("6.06", "STOMP 1.1 ack:client, ACK with message-id+subscription, reconnect")
def _(sc):
    q = sc.d("/queue/ack")
    a = new_conn(sc, "A", version="1.1")
    a.sub(q, "id:1", "ack:client")
    m = a.mark()
    _send_n(sc, sc.prod(), q, 2)
    got = a.expect(2, 1.5, since=m)
    if len(got) >= 2:
        a.receipt(a.send("ACK", *a.ack_of(got[1]), receipt=True))
    a.disconnect()
    b = new_conn(sc, "B")
    b.sub(q, "id:1", "ack:auto")
    b.drain(0.7)


@scenario("6.07", "STOMP 1.0 ack:client, ACK with message-id, reconnect")
def _(sc):
    q = sc.d("/queue/ack")
    a = new_conn(sc, "A", version=None)
    a.sub(q, "ack:client", id=None)
    m = a.mark()
    _send_n(sc, sc.prod(), q, 2)
    got = a.expect(2, 1.5, since=m)
    if got:
        a.receipt(a.send("ACK", *a.ack_of(got[0]), receipt=True))
    a.disconnect()
    b = new_conn(sc, "B")
    b.sub(q, "id:1", "ack:auto")
    b.drain(0.7)


@scenario("6.08", "ack:client, no ACK, UNSUBSCRIBE then re-SUBSCRIBE on same connection")
def _(sc):
    q = sc.d("/queue/ack")
    a = new_conn(sc, "A")
    a.sub(q, "id:1", "ack:client")
    m = a.mark()
    _send_n(sc, sc.prod(), q, 2)
    a.expect(2, 1.5, since=m)
    a.receipt(a.send("UNSUBSCRIBE", "id:1", receipt=True))
    a.sub(q, "id:2", "ack:auto")
    a.drain(0.7)


# ---------------------------------------------------------------- 7 browser
def _browser(sid, title, version="1.2", ack="client", n=2):
    @scenario(sid, title)
    def _(sc):
        q = sc.d("/queue/br")
        a = new_conn(sc, "A", version=version)
        _send_n(sc, a, q, n)
        a.sub(q, "id:b", "browser:true", "ack:" + ack)
        a.drain(1.0)
        sc.log("A: normal consumer afterwards (are the messages still queued?)")
        a.sub(q, "id:n", "ack:auto")
        a.drain(0.7)


_browser("7.01", "browser:true ack:client on queue with 2 messages (1.2)")
_browser("7.02", "browser:true ack:client on queue with 2 messages (1.0)", version=None)
_browser("7.03", "browser:true ack:auto on queue with 2 messages (1.2)", ack="auto")
_browser("7.04", "browser:true ack:client on empty queue (1.2)", n=0)


# ---------------------------------------------------------------- 8 transactions
@scenario("8.01", "BEGIN, SEND x2 in tx, COMMIT")
def _(sc):
    q = sc.d("/queue/tx")
    a = new_conn(sc, "A")
    a.sub(q, "id:1", "ack:auto")
    a.receipt(a.send("BEGIN", "transaction:t1", receipt=True))
    a.sendmsg(q, "tx-1", "transaction:t1")
    a.sendmsg(q, "tx-2", "transaction:t1")
    sc.log("A: before COMMIT:")
    a.drain_note(0.5)
    a.receipt(a.send("COMMIT", "transaction:t1", receipt=True))
    a.expect(2, 1.0)


@scenario("8.02", "BEGIN, SEND x2 in tx, ABORT")
def _(sc):
    q = sc.d("/queue/tx")
    a = new_conn(sc, "A")
    a.sub(q, "id:1", "ack:auto")
    a.receipt(a.send("BEGIN", "transaction:t1", receipt=True))
    a.sendmsg(q, "tx-1", "transaction:t1")
    a.sendmsg(q, "tx-2", "transaction:t1")
    a.receipt(a.send("ABORT", "transaction:t1", receipt=True))
    a.drain_note(0.7)


def _ack_tx(sid, title, ackmode):
    @scenario(sid, title)
    def _(sc):
        q = sc.d("/queue/txack")
        a = new_conn(sc, "A")
        a.sub(q, "id:1", "ack:" + ackmode)
        m = a.mark()
        sc.prod().sendmsg(q, "m1")
        got = a.expect(1, 1.5, since=m)
        if not got:
            return
        a.receipt(a.send("BEGIN", "transaction:t1", receipt=True))
        a.receipt(a.send("ACK", *a.ack_of(got[0]) + ["transaction:t1"], receipt=True))
        a.receipt(a.send("ABORT", "transaction:t1", receipt=True))
        sc.log("A: after ABORT:")
        a.drain_note(1.0)
        sc.log("A: ACK the same message again, outside any transaction:")
        a.receipt(a.send("ACK", *a.ack_of(got[0]), receipt=True))
        a.drain(0.3)
        a.disconnect()
        b = new_conn(sc, "B")
        sc.log("B: is the message still on the queue?")
        b.sub(q, "id:1", "ack:auto")
        b.drain_note(0.7)


_ack_tx("8.03", "ack:client-individual: ACK inside tx, ABORT, then ACK again", "client-individual")
_ack_tx("8.04", "ack:client: ACK inside tx, ABORT, then ACK again", "client")


@scenario("8.05", "ACK inside tx then COMMIT (client-individual), reconnect")
def _(sc):
    q = sc.d("/queue/txack")
    a = new_conn(sc, "A")
    a.sub(q, "id:1", "ack:client-individual")
    m = a.mark()
    sc.prod().sendmsg(q, "m1")
    got = a.expect(1, 1.5, since=m)
    if not got:
        return
    a.receipt(a.send("BEGIN", "transaction:t1", receipt=True))
    a.receipt(a.send("ACK", *a.ack_of(got[0]) + ["transaction:t1"], receipt=True))
    a.receipt(a.send("COMMIT", "transaction:t1", receipt=True))
    a.disconnect()
    b = new_conn(sc, "B")
    b.sub(q, "id:1", "ack:auto")
    b.drain_note(0.7)


@scenario("8.07", "ack:client-individual: ACK inside tx, ABORT, DISCONNECT (no 2nd ACK), reconnect")
def _(sc):
    q = sc.d("/queue/txack")
    a = new_conn(sc, "A")
    a.sub(q, "id:1", "ack:client-individual")
    m = a.mark()
    sc.prod().sendmsg(q, "m1")
    got = a.expect(1, 1.5, since=m)
    if not got:
        return
    a.receipt(a.send("BEGIN", "transaction:t1", receipt=True))
    a.receipt(a.send("ACK", *a.ack_of(got[0]) + ["transaction:t1"], receipt=True))
    a.receipt(a.send("ABORT", "transaction:t1", receipt=True))
    a.drain(0.3)
    a.disconnect()
    b = new_conn(sc, "B")
    sc.log("B: is the message still on the queue?")
    b.sub(q, "id:1", "ack:auto")
    b.drain_note(0.7)


@scenario("8.06", "SEND in tx then DISCONNECT without COMMIT")
def _(sc):
    q = sc.d("/queue/tx")
    a = new_conn(sc, "A")
    a.receipt(a.send("BEGIN", "transaction:t1", receipt=True))
    a.sendmsg(q, "tx-1", "transaction:t1")
    a.disconnect()
    b = new_conn(sc, "B")
    b.sub(q, "id:1", "ack:auto")
    b.drain_note(0.7)


# ---------------------------------------------------------------- 9 durable subscriptions
def _durable_setup(sc, cid, t):
    a = new_conn(sc, "A", "client-id:" + cid)
    a.sub(t, "id:1", "activemq.subscriptionName:s1")
    a.disconnect()
    p = new_conn(sc, "P")
    p.sendmsg(t, "d1", "persistent:true")
    p.sendmsg(t, "d2", "persistent:true")
    p.disconnect()


@scenario("9.01", "durable: subscribe, disconnect, publish 2, resubscribe; UNSUBSCRIBE id+name while subscribed")
def _(sc):
    cid, t = "c1-" + sc.tag, sc.d("/topic/t")
    _durable_setup(sc, cid, t)
    a = new_conn(sc, "A2", "client-id:" + cid)
    a.sub(t, "id:1", "activemq.subscriptionName:s1")
    a.drain(1.0)
    sc.log("A2: UNSUBSCRIBE id:1 + activemq.subscriptionName:s1 while subscribed")
    a.receipt(a.send("UNSUBSCRIBE", "id:1", "activemq.subscriptionName:s1", receipt=True))
    a.drain(0.3)
    a.alive()
    a.disconnect()
    p = new_conn(sc, "P2")
    p.sendmsg(t, "d3-after-unsub", "persistent:true")
    p.disconnect()
    a = new_conn(sc, "A3", "client-id:" + cid)
    sc.log("A3: resubscribe durable: does d3 arrive (i.e. was the durable sub kept)?")
    a.sub(t, "id:1", "activemq.subscriptionName:s1")
    a.drain_note(0.7)


def _durable_unsub2(sid, title, second):
    @scenario(sid, title)
    def _(sc):
        cid, t = "c1-" + sc.tag, sc.d("/topic/t")
        a = new_conn(sc, "A", "client-id:" + cid)
        a.sub(t, "id:1", "activemq.subscriptionName:s1")
        a.receipt(a.send("UNSUBSCRIBE", "id:1", receipt=True))
        a.receipt(a.send("UNSUBSCRIBE", *second, receipt=True))
        a.drain(0.3)
        a.alive()
        a.disconnect()
        p = new_conn(sc, "P")
        p.sendmsg(t, "d-after", "persistent:true")
        p.disconnect()
        a = new_conn(sc, "A2", "client-id:" + cid)
        sc.log("A2: resubscribe durable: does d-after arrive (durable sub still exists)?")
        a.sub(t, "id:1", "activemq.subscriptionName:s1")
        a.drain_note(0.7)


_durable_unsub2("9.02", "durable: UNSUBSCRIBE id:1, then UNSUBSCRIBE id:1+activemq.subscriptionName:s1",
                ["id:1", "activemq.subscriptionName:s1"])
_durable_unsub2("9.03", "durable: UNSUBSCRIBE id:1, then UNSUBSCRIBE activemq.subscriptionName:s1 (no id)",
                ["activemq.subscriptionName:s1"])


@scenario("9.04", "durable: plain UNSUBSCRIBE id:1, disconnect, publish, resubscribe (sub kept?)")
def _(sc):
    cid, t = "c1-" + sc.tag, sc.d("/topic/t")
    a = new_conn(sc, "A", "client-id:" + cid)
    a.sub(t, "id:1", "activemq.subscriptionName:s1")
    a.receipt(a.send("UNSUBSCRIBE", "id:1", receipt=True))
    a.disconnect()
    p = new_conn(sc, "P")
    p.sendmsg(t, "d-after", "persistent:true")
    p.disconnect()
    a = new_conn(sc, "A2", "client-id:" + cid)
    a.sub(t, "id:1", "activemq.subscriptionName:s1")
    a.drain_note(0.7)


@scenario("9.05", "durable subscribe on a queue")
def _(sc):
    a = new_conn(sc, "A", "client-id:c1-" + sc.tag)
    a.sub(sc.d("/queue/dq"), "id:1", "activemq.subscriptionName:s1")
    a.drain(0.3)
    a.alive()


@scenario("9.06", "durable subscribe without client-id")
def _(sc):
    a = new_conn(sc, "A")
    a.sub(sc.d("/topic/t"), "id:1", "activemq.subscriptionName:s1")
    a.drain(0.3)
    a.alive()


@scenario("9.07", "two connections with the same client-id")
def _(sc):
    cid = "same-" + sc.tag
    a = new_conn(sc, "A", "client-id:" + cid)
    b = new_conn(sc, "B", "client-id:" + cid)
    b.drain(0.5)
    b.alive()
    a.drain(0.2)
    a.alive()


# ---------------------------------------------------------------- 10 temp destinations
@scenario("10.01", "temp-queue: SUBSCRIBE + SEND with reply-to from same connection")
def _(sc):
    tq = "/temp-queue/q-" + sc.tag
    a = new_conn(sc, "A")
    a.sub(tq, "id:1")
    m = a.mark()
    a.sendmsg(tq, "self", "reply-to:" + tq)
    a.expect(1, 1.0, since=m)


@scenario("10.02", "temp-queue request/reply across connections; send after owner disconnects")
def _(sc):
    tq = "/temp-queue/q-" + sc.tag
    req = sc.d("/queue/req")
    a = new_conn(sc, "A")
    a.sub(tq, "id:1")
    b = new_conn(sc, "B")
    b.sub(req, "id:1")
    mb = b.mark()
    a.sendmsg(req, "request", "reply-to:" + tq)
    got = b.expect(1, 1.0, since=mb)
    if not got:
        return
    rt = got[0].get("reply-to")
    sc.log("B: replying to reply-to value as received")
    ma = a.mark()
    b.sendmsg(rt, "reply")
    a.expect(1, 1.0, since=ma)
    a.disconnect()
    sc.log("B: owner A disconnected; sending to the same reply-to value again")
    b.sendmsg(rt, "late-reply")
    b.drain(0.3)
    b.alive()


@scenario("10.03", "temp-topic: SUBSCRIBE + SEND with reply-to from same connection")
def _(sc):
    tt = "/temp-topic/t-" + sc.tag
    a = new_conn(sc, "A")
    a.sub(tt, "id:1")
    m = a.mark()
    a.sendmsg(tt, "self", "reply-to:" + tt)
    a.expect(1, 1.0, since=m)


@scenario("10.04", "temp-queue used by a different connection (subscribe to same /temp-queue name)")
def _(sc):
    tq = "/temp-queue/q-" + sc.tag
    a = new_conn(sc, "A")
    a.sub(tq, "id:1")
    b = new_conn(sc, "B")
    b.sub(tq, "id:1")
    ma, mb = a.mark(), b.mark()
    b.sendmsg(tq, "from-B")
    a.drain(0.5)
    b.drain(0.3)


# ---------------------------------------------------------------- 11 wildcards / composite
def _wild(sid, title, sub_suffix, sends):
    @scenario(sid, title)
    def _(sc):
        base = sc.d(sub_suffix[0])
        a = new_conn(sc, "A")
        a.sub(base + sub_suffix[1], "id:1")
        m = a.mark()
        for s in sends:
            sc.prod().sendmsg(base + s, "to" + (s or "(base)"))
        a.expect(len(sends), 1.0, since=m)
        a.drain(0.2)


_wild("11.01", "SUBSCRIBE /topic/a.> ; send to a, a.b, a.b.c", ("/topic/wa", ".>"), ["", ".b", ".b.c"])
_wild("11.02", "SUBSCRIBE /topic/a.* ; send to a, a.b, a.b.c", ("/topic/wa", ".*"), ["", ".b", ".b.c"])
_wild("11.03", "SUBSCRIBE /queue/w.* ; send to w.x", ("/queue/w", ".*"), [".x"])


@scenario("11.04", "composite SEND to /queue/c1,/queue/c2")
def _(sc):
    c1, c2 = sc.d("/queue/c1"), sc.d("/queue/c2")
    a = new_conn(sc, "A")
    a.sub(c1, "id:1")
    a.sub(c2, "id:2")
    m = a.mark()
    sc.prod().sendmsg(c1 + "," + c2, "composite")
    a.expect(2, 1.0, since=m)
    a.drain(0.2)


@scenario("11.05", "composite SEND to /queue/c1,/topic/t2")
def _(sc):
    c1, t2 = sc.d("/queue/c1"), sc.d("/topic/t2")
    a = new_conn(sc, "A")
    a.sub(c1, "id:1")
    a.sub(t2, "id:2")
    m = a.mark()
    sc.prod().sendmsg(c1 + "," + t2, "composite")
    a.expect(2, 1.0, since=m)
    a.drain(0.2)


@scenario("11.06", "SUBSCRIBE to composite /queue/c1,/queue/c2; send to each")
def _(sc):
    c1, c2 = sc.d("/queue/c1"), sc.d("/queue/c2")
    a = new_conn(sc, "A")
    a.sub(c1 + "," + c2, "id:1")
    m = a.mark()
    sc.prod().sendmsg(c1, "to-c1")
    sc.prod().sendmsg(c2, "to-c2")
    a.expect(2, 1.0, since=m)
    a.drain(0.2)


# ---------------------------------------------------------------- 12 prefetch
@scenario("12.01", "activemq.prefetchSize:1 ack:client, 2 consumers (A,B), 4 messages")
def _(sc):
    q = sc.d("/queue/pf")
    a = new_conn(sc, "A")
    a.sub(q, "id:1", "ack:client", "activemq.prefetchSize:1")
    b = new_conn(sc, "B")
    b.sub(q, "id:1", "ack:client", "activemq.prefetchSize:1")
    p = new_conn(sc, "P")
    _send_n(sc, p, q, 4)
    sc.log("-- initial dispatch")
    a.drain(0.5)
    b.drain(0.3)
    for who, other in ((a, b), (b, a), (a, b), (b, a)):
        ms = who.msgs()
        if not ms:
            continue
        sc.log("-- %s ACKs its latest message (%s)" % (who.label, ms[-1].body.decode("utf-8", "replace")))
        who.receipt(who.send("ACK", *who.ack_of(ms[-1]), receipt=True))
        who.drain(0.4)
        other.drain(0.2)


# ---------------------------------------------------------------- 13 groups
@scenario("13.01", "JMSXGroupID / JMSXGroupSeq headers echoed?")
def _(sc):
    q = sc.d("/queue/grp")
    a = new_conn(sc, "A")
    a.sub(q, "id:1")
    m = a.mark()
    sc.prod().sendmsg(q, "g1", "JMSXGroupID:grpA")
    sc.prod().sendmsg(q, "g2", "JMSXGroupID:grpA", "JMSXGroupSeq:5")
    sc.prod().sendmsg(q, "g3", "JMSXGroupSeq:7")
    a.expect(3, 1.0, since=m)


@scenario("13.02", "JMSXGroupID with 2 consumers: which consumer gets the group")
def _(sc):
    q = sc.d("/queue/grp")
    a = new_conn(sc, "A")
    a.sub(q, "id:1")
    b = new_conn(sc, "B")
    b.sub(q, "id:1")
    p = new_conn(sc, "P")
    for i in range(1, 5):
        p.sendmsg(q, "g%d" % i, "JMSXGroupID:grpA")
    a.drain(0.5)
    b.drain(0.3)
    sc.note("A got %d, B got %d" % (len(a.msgs()), len(b.msgs())))


@scenario("13.03", "control for 13.02: 4 messages without JMSXGroupID, 2 consumers")
def _(sc):
    q = sc.d("/queue/grp")
    a = new_conn(sc, "A")
    a.sub(q, "id:1")
    b = new_conn(sc, "B")
    b.sub(q, "id:1")
    p = new_conn(sc, "P")
    for i in range(1, 5):
        p.sendmsg(q, "n%d" % i)
    a.drain(0.5)
    b.drain(0.3)
    sc.note("A got %d, B got %d" % (len(a.msgs()), len(b.msgs())))


# ---------------------------------------------------------------- 14 expiry
def _expired(sid, title, persistent):
    @scenario(sid, title)
    def _(sc):
        q = sc.d("/queue/exp")
        a = new_conn(sc, "A")
        a.sendmsg(q, "expired-" + sc.tag, "persistent:%s" % ("true" if persistent else "false"),
                  "expires:%d" % (now_ms() - 10000), "foo:bar")
        sc.log("A: subscribe to the queue")
        a.sub(q, "id:1")
        a.drain_note(1.0)
        a.disconnect()
        dlq_check(sc)


_expired("14.01", "expired persistent message (expires now-10s) -> DLQ?", True)
_expired("14.02", "expired non-persistent message (expires now-10s) -> DLQ?", False)


@scenario("14.03", "expires now+600ms, persistent, consumer subscribes after 1.2 s -> DLQ?")
def _(sc):
    q = sc.d("/queue/exp")
    a = new_conn(sc, "A")
    a.sendmsg(q, "expiring-" + sc.tag, "persistent:true", "expires:%d" % (now_ms() + 600))
    time.sleep(1.2)
    a.sub(q, "id:1")
    a.drain_note(0.7)
    a.disconnect()
    dlq_check(sc)


# ---------------------------------------------------------------- 15 heart-beats
def _intervals(ts, t0):
    out, prev = [], t0
    for t in ts:
        out.append(int(round((t - prev) * 1000 / 50.0)) * 50)
        prev = t
    return out


@scenario("15.01", "heart-beat:0,500 -> broker EOL interval over ~2.2 s")
def _(sc):
    a = sc.conn("A")
    a.quiet_eol = True
    f = a.connect("heart-beat:0,500")
    t0 = f.t if f is not None else time.time()
    a.drain(2.2)
    ivs = _intervals(a.eols, t0)
    sc.note("EOLs received in ~2.2 s: %d; intervals (ms, rounded to 50, first from CONNECTED): %s"
            % (len(a.eols), ivs))


@scenario("15.02", "heart-beat:500,0 then silent -> when is the connection dropped?")
def _(sc):
    a = sc.conn("A")
    a.quiet_eol = True
    f = a.connect("heart-beat:500,0")
    t0 = f.t if f is not None else time.time()
    a.drain(6.0)
    if a.closed:
        sc.note("closed ~%d ms after CONNECTED (rounded to 100)" % (int(round((time.time() - t0) * 10)) * 100))
    else:
        sc.note("still open after 6 s")
    sc.note("EOLs received from broker: %d" % len(a.eols))


@scenario("15.03", "heart-beat:1000,0 then silent -> when is the connection dropped?")
def _(sc):
    a = sc.conn("A")
    a.quiet_eol = True
    f = a.connect("heart-beat:1000,0")
    t0 = f.t if f is not None else time.time()
    a.drain(6.0)
    if a.closed:
        sc.note("closed ~%d ms after CONNECTED (rounded to 100)" % (int(round((time.time() - t0) * 10)) * 100))
    else:
        sc.note("still open after 6 s")


@scenario("15.04", "heart-beat:500,0 and client sends EOL every 250 ms for 2 s")
def _(sc):
    a = sc.conn("A")
    a.quiet_eol = True
    a.connect("heart-beat:500,0")
    sc.log("A >>> (EOL every 250 ms for 2 s, not logged individually)")
    end = time.time() + 2.0
    while time.time() < end and a.closed is None:
        try:
            a.sock.sendall(b"\n")
        except OSError as e:
            sc.log("A: send failed: %s" % type(e).__name__)
            break
        a.drain(0.25)
    a.alive()


@scenario("15.05", "heart-beat:1000,2000: CONNECTED value; broker EOLs during 4.5 s while client sends EOL every 400 ms")
def _(sc):
    a = sc.conn("A")
    a.quiet_eol = True
    f = a.connect("heart-beat:1000,2000")
    t0 = f.t if f is not None else time.time()
    end = time.time() + 4.5
    while time.time() < end and a.closed is None:
        try:
            a.sock.sendall(b"\n")
        except OSError:
            break
        a.drain(0.4)
    sc.note("EOLs from broker: %d; intervals: %s" % (len(a.eols), _intervals(a.eols, t0)))
    a.alive()


# ---------------------------------------------------------------- 16 receipts
@scenario("16.01", "DISCONNECT with receipt")
def _(sc):
    a = new_conn(sc, "A")
    rid = a.send("DISCONNECT", receipt=True)
    a.receipt(rid)
    a.drain(1.0)


@scenario("16.02", "DISCONNECT without receipt")
def _(sc):
    a = new_conn(sc, "A")
    a.send("DISCONNECT")
    a.drain(1.0)


@scenario("16.03", "SUBSCRIBE with receipt, UNSUBSCRIBE with receipt, then SEND (delivered?)")
def _(sc):
    q = sc.d("/queue/rc")
    a = new_conn(sc, "A")
    a.sub(q, "id:1")
    a.receipt(a.send("UNSUBSCRIBE", "id:1", receipt=True))
    sc.prod().sendmsg(q, "after-unsub")
    a.drain_note(0.5)


@scenario("16.04", "ACK / NACK / BEGIN / COMMIT each with receipt")
def _(sc):
    q = sc.d("/queue/rc")
    a = new_conn(sc, "A")
    a.sub(q, "id:1", "ack:client-individual")
    m = a.mark()
    _send_n(sc, sc.prod(), q, 2)
    got = a.expect(2, 1.0, since=m)
    if len(got) == 2:
        a.receipt(a.send("ACK", *a.ack_of(got[0]), receipt=True))
        a.receipt(a.send("BEGIN", "transaction:t1", receipt=True))
        a.receipt(a.send("COMMIT", "transaction:t1", receipt=True))
        a.receipt(a.send("NACK", *a.ack_of(got[1]), receipt=True))
    a.drain(0.3)


# ---------------------------------------------------------------- 17 selectors
def _sel(sid, selector, msgs):
    @scenario(sid, "selector: %s" % selector)
    def _(sc):
        q = sc.d("/queue/sel")
        a = new_conn(sc, "A")
        a.sub(q, "id:1", "selector:" + selector)
        m = a.mark()
        for body, hdrs in msgs:
            sc.prod().sendmsg(q, body, *hdrs)
        a.drain(0.8)
        sc.note("delivered bodies: %s" % [f.body.decode("utf-8", "replace") for f in a.msgs(m)])


_sel("17.01", "weight > 5", [("w10", ["weight:10"]), ("w3", ["weight:3"]), ("wabc", ["weight:abc"]), ("none", [])])
_sel("17.02", "weight * 2 = 20", [("w10", ["weight:10"]), ("w5", ["weight:5"])])
_sel("17.03", "JMSPriority > 5", [("p9", ["priority:9"]), ("p1", ["priority:1"]), ("pdefault", [])])
_sel("17.04", "foo = 'bar'", [("bar", ["foo:bar"]), ("baz", ["foo:baz"]), ("none", [])])
_sel("17.05", "weight = '10'", [("w10", ["weight:10"]), ("w5", ["weight:5"])])
_sel("17.06", "weight = 10", [("w10", ["weight:10"]), ("w5", ["weight:5"])])
_sel("17.07", "JMSType = 'mytype'", [("t", ["type:mytype"]), ("o", ["type:other"])])
_sel("17.08", "JMSCorrelationID = 'c1'", [("c", ["correlation-id:c1"]), ("o", ["correlation-id:c2"])])


# ======================================================================
def main(argv):
    global HOST, PORT
    args = [a for a in argv[1:] if not a.startswith("--")]
    only = None
    for a in argv[1:]:
        if a.startswith("--only="):
            only = a.split("=", 1)[1].split(",")
    if "--list" in argv:
        for sid, title, _ in SCENARIOS:
            print(sid, title)
        return 0
    if len(args) < 2:
        sys.stderr.write(__doc__)
        return 2
    HOST, PORT = args[0], int(args[1])
    print("# stomp_probe against %s:%d (token normalized to <R>)" % (HOST, PORT))
    for sid, title, fn in SCENARIOS:
        if only and not any(sid == o or sid.startswith(o.rstrip(".") + ".") for o in only):
            continue
        sc = Scenario(sid, title)
        print("")
        print("=== [%s] %s ===" % (sid, title))
        try:
            fn(sc)
        except Exception as e:  # keep going
            sc.log("EXCEPTION in scenario: %s: %s" % (type(e).__name__, e))
        try:
            sc.finish()
        except Exception as e:
            sc.log("EXCEPTION in close check: %s: %s" % (type(e).__name__, e))
        for line in sc.out:
            print(line)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
