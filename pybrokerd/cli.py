"""pybroker: send, receive, browse, purge, stat and scheduled-job commands over STOMP.

Every command takes --url (plain or failover, default tcp://127.0.0.1:61613) and
--user/--password.  Errors print one line on stderr.  Exit codes:

    0  done                      3  timed out before --count messages arrived
    1  the broker refused (ERROR frame) or bad input
    2  usage error (argparse)    4  no broker reachable / connection lost
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

from pybrokerd.client import (BrokerErrorFrame, ClientError, ConnectFailed, ConnectionLost,
                              FailoverTimeout, URLError)
from pybrokerd.client.blocking import BlockingClient

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_CONNECT = 0, 1, 2, 3, 4
DEFAULT_URL = "tcp://127.0.0.1:61613"


class CommandError(Exception):
    def __init__(self, message, code=EXIT_REFUSED):
        super().__init__(message)
        self.code = code


# -- progress ------------------------------------------------------------------------------

class Progress:
    """A progress bar with a rate on a terminal (stderr); silent when not a terminal."""

    def __init__(self, verb, total=None, stream=None, enabled=None):
        self.verb = verb
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.count = 0
        self.started = time.monotonic()
        self._last = 0.0

    def step(self, n=1):
        self.count += n
        if self.enabled:
            now = time.monotonic()
            if now - self._last >= 0.1 or self.count == self.total:
                self._last = now
                self._draw(now)

    def rate(self):
        elapsed = time.monotonic() - self.started
        return self.count / elapsed if elapsed > 0 else 0.0

    def _draw(self, now):
        rate = self.rate()
        if self.total:
            width = 30
            filled = int(width * min(self.count, self.total) / self.total)
            bar = "[%s%s] %s/%s" % ("#" * filled, "." * (width - filled),
                                    format(self.count, ","), format(self.total, ","))
        else:
            bar = "%s messages" % format(self.count, ",")
        self.stream.write("\r%s %s  %s msg/s " % (self.verb, bar, format(int(rate), ",")))
        self.stream.flush()

    def done(self, what):
        elapsed = time.monotonic() - self.started
        if self.enabled:
            self.stream.write("\r\x1b[K")
        self.stream.write("%s %d message%s %s in %.2f s (%s msg/s)\n" % (
            self.verb, self.count, "" if self.count == 1 else "s", what, elapsed,
            format(int(self.count / elapsed) if elapsed > 0 else 0, ",")))
        self.stream.flush()


# -- helpers -------------------------------------------------------------------------------

def _client(args, **kwargs) -> BlockingClient:
    return BlockingClient(args.url, login=args.user, passcode=args.password, **kwargs).connect()


def _headers(pairs):
    headers = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise CommandError("--header %r: expected name=value" % pair, EXIT_USAGE)
        name, value = pair.split("=", 1)
        if not name:
            raise CommandError("--header %r: empty name" % pair, EXIT_USAGE)
        headers[name] = value
    return headers


def _check_destination(text):
    if not text.startswith(("/queue/", "/topic/", "/temp-queue/", "/temp-topic/")):
        raise CommandError("destination %r must start with /queue/ or /topic/" % text, EXIT_USAGE)
    return text


def _bodies(args):
    """Message bodies: the arguments, else one per line of --file or stdin."""
    if args.body:
        yield from args.body
        return
    stream = open(args.file, "rb") if args.file else sys.stdin.buffer
    try:
        for line in stream:
            yield line.rstrip(b"\r\n")
    finally:
        if args.file:
            stream.close()


def _reply_queue():
    # a temporary queue: the broker deletes it when we disconnect
    return "/temp-queue/pybroker-reply-" + uuid.uuid4().hex[:12]


# -- commands ------------------------------------------------------------------------------

def cmd_send(args):
    dest = _check_destination(args.destination)
    headers = _headers(args.header)
    if args.delay is not None:
        headers["AMQ_SCHEDULED_DELAY"] = str(args.delay)
    if args.cron:
        headers["AMQ_SCHEDULED_CRON"] = args.cron
    if args.body and args.file:
        raise CommandError("give bodies as arguments or with --file, not both", EXIT_USAGE)
    progress = Progress("sent", total=(len(args.body) * args.count) if args.body else None)
    with _client(args) as c:
        bodies = _bodies(args)
        if args.count > 1:
            bodies = (body for body in list(bodies) for _ in range(args.count))
        for body in bodies:
            c.send(dest, body, headers, persistent=args.persistent, wait=False)
            progress.step()
        c.flush()
    progress.done("to %s" % dest)


def cmd_receive(args):
    dest = _check_destination(args.destination)
    headers = {}
    if args.selector:
        headers["selector"] = args.selector
    if args.prefetch:
        headers["activemq.prefetchSize"] = str(args.prefetch)
    out = sys.stdout.buffer
    progress = Progress("received", total=args.count, enabled=sys.stderr.isatty()
                        and not out.isatty())
    got = 0
    with _client(args) as c:
        stream = c.subscribe(dest, ack="client-individual", headers=headers)
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        while args.count is None or got < args.count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            message = stream.receive(timeout=remaining if remaining is not None else 1.0)
            if message is None:
                continue
            if args.show_headers:
                out.write(json.dumps(message.headers, sort_keys=True).encode() + b"\n")
            out.write(message.body + b"\n")
            out.flush()
            message.ack()  # only after it is printed
            got += 1
            progress.step()
        c.unsubscribe(stream.id)
    if progress.enabled or got:
        progress.done("from %s" % dest)
    if args.count is not None and got < args.count:
        raise CommandError("timed out after %s s with %d of %d messages"
                           % (args.timeout, got, args.count), EXIT_TIMEOUT)


def cmd_browse(args):
    dest = _check_destination(args.destination)
    if not dest.startswith("/queue/"):
        raise CommandError("only queues can be browsed", EXIT_USAGE)
    out = sys.stdout.buffer
    headers = {"browser": "true"}
    if args.selector:
        headers["selector"] = args.selector
    count = 0
    with _client(args) as c:
        stream = c.subscribe(dest, headers=headers)
        while True:
            message = stream.receive(timeout=args.timeout)
            if message is None:
                raise CommandError("no end-of-browse marker within %s s" % args.timeout,
                                   EXIT_TIMEOUT)
            if message.headers.get("browser") == "end":
                break
            if args.show_headers:
                out.write(json.dumps(message.headers, sort_keys=True).encode() + b"\n")
            out.write(message.body + b"\n")
            count += 1
        out.flush()
    print("%d message%s in %s" % (count, "" if count == 1 else "s", dest), file=sys.stderr)


def _management(args, requests, wait=0.5, count=None, transformation=None, until=None):
    """Send management requests [(destination, headers)] with a reply-to and collect the
    replies: up to `count`, until `until(message)` is true for as many replies as there were
    requests, or until `wait` s pass without one."""
    reply_to = _reply_queue()
    replies = []
    ends = 0
    with _client(args) as c:
        sub_headers = {"transformation": transformation} if transformation else {}
        stream = c.subscribe(reply_to, headers=sub_headers)
        for destination, headers in requests:
            h = dict(headers)
            h["reply-to"] = reply_to
            c.send(destination, b"", h)
        while count is None or len(replies) < count:
            # the request's RECEIPT is in (send waits for it); pybrokerd sends every reply
            # before it, ActiveMQ soon after: a short silence ends an open-ended list
            timeout = args.timeout if until is not None or count is not None else wait
            message = stream.receive(timeout=timeout)
            if message is None:
                if until is not None:
                    raise CommandError("no complete answer within %s s" % args.timeout,
                                       EXIT_TIMEOUT)
                break
            if until is not None and until(message):
                ends += 1
                if ends == len(requests):
                    break
                continue
            replies.append(message)
        c.unsubscribe(stream.id)
    return replies


def _map_of(message):
    """The map of an ActiveMQ map message rendered with transformation jms-map-json."""
    data = json.loads(message.body.decode("utf-8"))
    result = {}
    body = data.get("map") if isinstance(data, dict) else None
    entries = body.get("entry", []) if isinstance(body, dict) else []
    if isinstance(entries, dict):
        entries = [entries]
    for entry in entries:
        key = None
        for kind, value in entry.items():
            if kind == "string":
                if isinstance(value, list):
                    key = value[0]
                    if len(value) > 1:
                        result[key] = value[1]
                        key = None
                        break
                else:
                    key = value
        if key is not None:
            for kind, value in entry.items():
                if kind != "string":
                    result[key] = value
    return result


STAT_COLUMNS = [("destinationName", "destination"), ("size", "size"),
                ("enqueueCount", "enqueued"), ("dequeueCount", "dequeued"),
                ("consumerCount", "consumers")]


END_WITH_NULL = "ActiveMQ.Statistics.Destination.List.End.With.Null"


def cmd_stat(args):
    pattern = args.pattern or ">"
    kinds = ["queue", "topic"] if args.topics else ["queue"]
    # as ActiveMQ's statistics plugin: a /queue/ request lists queues, a /topic/ one topics;
    # an empty map marks the end of each list
    requests = [("/%s/ActiveMQ.Statistics.Destination.%s" % (kind, pattern),
                 {END_WITH_NULL: "true"}) for kind in kinds]
    replies = _management(args, requests, transformation="jms-map-json",
                          until=lambda m: _is_empty_map(m))
    rows = []
    for message in replies:
        try:
            stats = _map_of(message)
        except ValueError:
            raise CommandError("unreadable statistics reply: %r" % message.body[:80]) from None
        if "destinationName" in stats:
            rows.append(stats)
    rows = [r for r in rows if "pybroker-reply-" not in str(r.get("destinationName", ""))]
    rows.sort(key=lambda r: str(r.get("destinationName")))
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return
    table = [[title for _, title in STAT_COLUMNS]]
    for r in rows:
        cells = [str(r.get(key, "")) for key, _ in STAT_COLUMNS]
        kind, sep, name = cells[0].partition("://")
        if sep:
            cells[0] = "/%s/%s" % (kind, name)  # queue://x -> /queue/x, as DESTINATION is written
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(STAT_COLUMNS))]
    for row in table:
        print("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                        for i, cell in enumerate(row)).rstrip())


def _is_empty_map(message):
    try:
        return not _map_of(message)
    except ValueError:
        return False


def cmd_purge(args):
    dest = _check_destination(args.destination)
    if not dest.startswith("/queue/"):
        raise CommandError("only queues can be purged", EXIT_USAGE)
    name = dest[len("/queue/"):]
    replies = _management(args, [("/queue/" + PURGE_PREFIX + name, {})], count=1)
    if not replies:
        raise CommandError("no answer to the purge request within %s s" % args.timeout,
                           EXIT_TIMEOUT)
    reply = replies[0]
    print("purged %s message(s) from %s" % (reply.headers.get("purged", "?"),
                                            reply.headers.get("purged-destination", dest)))


PURGE_PREFIX = "pybrokerd.Admin.Purge."
SCHEDULER = "/topic/ActiveMQ.Scheduler.Management"


def cmd_scheduled(args):
    if args.action == "list":
        replies = _management(args, [(SCHEDULER, {"AMQ_SCHEDULER_ACTION": "BROWSE"})])
        for message in replies:
            h = message.headers
            line = {"id": h.get("scheduledJobId"),
                    "destination": h.get("original-destination") or h.get("destination"),
                    "body": message.text}
            for key in ("AMQ_SCHEDULED_DELAY", "AMQ_SCHEDULED_PERIOD", "AMQ_SCHEDULED_REPEAT",
                        "AMQ_SCHEDULED_CRON"):
                if key in h:
                    line[key] = h[key]
            print(json.dumps(line))
        print("%d scheduled job%s" % (len(replies), "" if len(replies) == 1 else "s"),
              file=sys.stderr)
        return
    with _client(args) as c:
        if args.action == "remove":
            if not args.ids:
                raise CommandError("scheduled remove needs at least one job id", EXIT_USAGE)
            for job_id in args.ids:
                c.send(SCHEDULER, b"", {"AMQ_SCHEDULER_ACTION": "REMOVE",
                                        "scheduledJobId": job_id})
            print("removed %d job(s)" % len(args.ids))
        else:
            c.send(SCHEDULER, b"", {"AMQ_SCHEDULER_ACTION": "REMOVEALL"})
            print("removed all scheduled jobs")


def cmd_passwd(args):
    """Print a password hash for the [users] section of the broker's config file."""
    from pybrokerd.security import hash_password
    if sys.stdin.isatty():
        import getpass
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise CommandError("the two passwords differ", EXIT_USAGE)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CommandError("empty password", EXIT_USAGE)
    line = hash_password(password)
    print("%s = %s" % (args.user, line) if args.user else line)


# -- argument parsing ----------------------------------------------------------------------

def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("PYBROKER_URL", DEFAULT_URL),
                        help="broker URL, plain or failover:(...)?options "
                             "(default: $PYBROKER_URL or %s)" % DEFAULT_URL)
    common.add_argument("--user", default=os.environ.get("PYBROKER_USER"))
    common.add_argument("--password", default=os.environ.get("PYBROKER_PASSWORD"))

    parser = argparse.ArgumentParser(prog="pybroker", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    parser.commands = sub.choices

    p = sub.add_parser("send", parents=[common], help="send messages")
    p.add_argument("destination", metavar="DESTINATION", help="/queue/NAME or /topic/NAME")
    p.add_argument("body", metavar="BODY", nargs="*",
                   help="message bodies (default: one message per line of --file or stdin)")
    p.add_argument("--file", "-f", help="read bodies from this file, one per line")
    p.add_argument("--count", "-n", type=int, default=1, help="send each body this many times")
    p.add_argument("--persistent", "-p", action="store_true")
    p.add_argument("--header", "-H", action="append", metavar="NAME=VALUE")
    p.add_argument("--delay", type=int, metavar="MS", help="deliver after MS milliseconds")
    p.add_argument("--cron", metavar="EXPR", help="deliver on this cron schedule")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("receive", parents=[common], help="receive (and ack) messages")
    p.add_argument("destination", metavar="DESTINATION")
    p.add_argument("--count", "-n", type=int, help="stop after N messages")
    p.add_argument("--timeout", "-t", type=float, help="stop after S seconds")
    p.add_argument("--selector", "-s")
    p.add_argument("--prefetch", type=int, default=1,
                   help="messages the broker may push ahead (default 1: none lost to "
                        "a Ctrl-C; they would be redelivered)")
    p.add_argument("--show-headers", action="store_true", help="print each message's headers "
                   "as a JSON line before its body")
    p.set_defaults(func=cmd_receive)

    p = sub.add_parser("browse", parents=[common], help="list a queue's messages, "
                       "leaving them there")
    p.add_argument("destination", metavar="QUEUE")
    p.add_argument("--selector", "-s")
    p.add_argument("--timeout", "-t", type=float, default=30.0)
    p.add_argument("--show-headers", action="store_true")
    p.set_defaults(func=cmd_browse)

    p = sub.add_parser("purge", parents=[common], help="delete a queue's pending messages")
    p.add_argument("destination", metavar="QUEUE")
    p.add_argument("--timeout", "-t", type=float, default=30.0)
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("stat", parents=[common], help="destinations with sizes and counts")
    p.add_argument("pattern", nargs="?", metavar="PATTERN",
                   help="queue name or wildcard (default: all)")
    p.add_argument("--topics", action="store_true", help="include topics")
    p.add_argument("--json", action="store_true", help="print the raw statistics as JSON")
    p.add_argument("--timeout", "-t", type=float, default=10.0)
    p.set_defaults(func=cmd_stat)

    p = sub.add_parser("scheduled", parents=[common], help="list or remove scheduled jobs")
    p.add_argument("action", choices=["list", "remove", "remove-all"])
    p.add_argument("ids", nargs="*", metavar="JOB_ID")
    p.add_argument("--timeout", "-t", type=float, default=10.0)
    p.set_defaults(func=cmd_scheduled)

    p = sub.add_parser("passwd", help="print a password hash for the broker's [users] section "
                                      "(reads the password from the terminal or stdin)")
    p.add_argument("user", nargs="?", help="print a complete 'user = hash' line")
    p.set_defaults(func=cmd_passwd)
    return parser


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = parser.commands.get(argv[0]) if argv else None
    if command is None:
        args = parser.parse_args(argv)  # help, or the usage error for an unknown command
    else:
        # options may come after the bodies: pybroker send /queue/x a b --persistent
        args = command.parse_intermixed_args(argv[1:])
    if getattr(args, "count", None) is not None and args.count < 1:
        parser.error("--count must be at least 1")
    try:
        args.func(args)
    except CommandError as e:
        print("pybroker: %s" % e, file=sys.stderr)
        return e.code
    except URLError as e:
        print("pybroker: bad --url: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    except BrokerErrorFrame as e:
        print("pybroker: the broker refused: %s" % e, file=sys.stderr)
        return EXIT_REFUSED
    except (ConnectFailed, ConnectionLost) as e:
        print("pybroker: %s" % e, file=sys.stderr)
        return EXIT_CONNECT
    except FailoverTimeout as e:
        print("pybroker: %s" % e, file=sys.stderr)
        return EXIT_TIMEOUT
    except ClientError as e:
        print("pybroker: %s" % e, file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("pybroker: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except OSError as e:
        print("pybroker: %s" % e, file=sys.stderr)
        return EXIT_REFUSED
    except Exception as e:
        if os.environ.get("PYBROKER_DEBUG"):
            raise
        print("pybroker: internal error: %r (set PYBROKER_DEBUG=1 for the traceback)" % (e,),
              file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
