"""The admin HTTP listener (--admin): a JSON API, Prometheus metrics and an HTML console,
on twisted.web.  It opens before the lock, so a slave answers too: with its role and the lock
it waits on, and nothing else (docs/admin.md).

Routes (JSON unless said):

    GET    /api/health                       200 on the master, 503 on a slave (no auth)
    GET    /api/broker                       name, version, role, uptime, store, scheduler, lock, limits
    GET    /api/destinations                 queues and topics with their counts
    GET    /api/destinations/<kind>/<name>/messages?limit=N   the first N messages (browse)
    POST   /api/destinations/queue/<name>/purge
    DELETE /api/destinations/<kind>/<name>
    POST   /api/send                         {"destination": "/queue/x", "body": "...", ...}
    GET    /api/connections
    GET    /api/scheduler                    the scheduled jobs
    DELETE /api/scheduler/<job id>
    GET    /metrics                          Prometheus text format
    GET    /                                 the console (one HTML page, no CDN)

With users configured, everything but /api/health needs HTTP basic authentication against
them, and the actions (POST, DELETE) a user in the admin group (--admin-group).
"""

from __future__ import annotations

import base64
import json
import os
import time
from urllib.parse import unquote

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.web import resource, server

from pybrokerd import __version__
from pybrokerd.broker.core import BrokerError
from pybrokerd.broker.destination import (
    QUEUE, TOPIC, Destination, DestinationError, split_stomp)
from pybrokerd.broker.destination import PREFIXES as STOMP_PREFIXES
from pybrokerd.broker.message import Message
from pybrokerd.security import SecurityError

log = Logger()

CONSOLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console.html")
BODY_PREVIEW = 4096  # bytes of a message body shown by browse


class HttpError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class AdminResource(resource.Resource):
    isLeaf = True

    def __init__(self, service, admin_group: str = "admins"):
        super().__init__()
        self.service = service
        self.admin_group = admin_group
        self.started = time.time()

    # -- plumbing --------------------------------------------------------------------------
    def render(self, request):
        path = [unquote(p) for p in request.path.decode("utf-8", "replace").split("/") if p]
        method = request.method.decode()
        request.setHeader(b"cache-control", b"no-store")
        d = defer.maybeDeferred(self._route, request, method, path)
        d.addCallbacks(lambda result: self._answer(request, result),
                       lambda failure: self._error(request, failure))
        return server.NOT_DONE_YET

    def _answer(self, request, result):
        if request.finished or getattr(request, "_disconnected", False):
            return
        if isinstance(result, tuple):  # (content type, bytes)
            request.setHeader(b"content-type", result[0])
            request.write(result[1])
        else:
            code = 200
            if isinstance(result, dict) and "_status" in result:
                code = result.pop("_status")
            request.setResponseCode(code)
            request.setHeader(b"content-type", b"application/json")
            request.write(json.dumps(result, indent=1, default=str).encode())
        request.finish()

    def _error(self, request, failure):
        if failure.check(HttpError):
            code, text = failure.value.code, str(failure.value)
        elif failure.check(BrokerError, DestinationError, SecurityError, ValueError):
            code, text = 400, str(failure.value)
        else:
            log.failure("admin request {path}", failure, path=request.path)
            code, text = 500, "internal error (see the broker log)"
        if code == 401:
            request.setHeader(b"www-authenticate", b'Basic realm="pybrokerd"')
        self._answer(request, {"_status": code, "error": text})

    def _principal(self, request):
        """-> Deferred principal (None when no users are configured)."""
        security = self._security()
        if security is None or not security.users:
            return defer.succeed(None)
        header = request.getHeader("authorization") or ""
        if not header.lower().startswith("basic "):
            return defer.fail(HttpError(401, "authentication required"))
        try:
            login, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return defer.fail(HttpError(401, "bad authorization header"))
        d = threads.deferToThread(security.authenticate, login, password)

        def refused(failure):
            failure.trap(SecurityError)
            raise HttpError(401, str(failure.value))
        return d.addErrback(refused)

    def _security(self):
        broker = self.service.broker
        if broker is not None:
            return broker.security
        return getattr(self.service.options, "security", None)

    def _require_admin(self, principal):
        if principal is not None and self.admin_group not in principal.groups:
            raise HttpError(403, "User %s is not in the %s group, which the admin actions need"
                            % (principal.user, self.admin_group))

    # -- routing ---------------------------------------------------------------------------
    @staticmethod
    def _check_host(request):
        """Reached on a loopback address, the console answers only to a loopback Host name:
        a web page whose name was made to resolve to 127.0.0.1 (DNS rebinding) must not get
        at it through the user's browser."""
        local = getattr(request.getHost(), "host", "")
        if not (local.startswith("127.") or local == "::1"):
            return
        host = (request.getHeader("host") or "").strip().lower()
        if host.startswith("["):
            name = host[1:].split("]", 1)[0]
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        if not (name == "localhost" or name.startswith("127.") or name == "::1"):
            raise HttpError(421, "this admin listener answers only to localhost or a loopback "
                                 "address, not %r (bind it elsewhere with --admin to reach it "
                                 "under another name)" % host)

    @defer.inlineCallbacks
    def _route(self, request, method, path):
        self._check_host(request)
        if path == ["api", "health"]:
            return self.health()
        principal = yield self._principal(request)
        if not path or path == ["admin"]:
            with open(CONSOLE, "rb") as f:
                return (b"text/html; charset=utf-8", f.read())
        if path == ["api", "broker"] and method == "GET":
            return self.broker_status()
        if path == ["metrics"] and method == "GET":
            from pybrokerd.admin.metrics import render
            return (b"text/plain; version=0.0.4; charset=utf-8", render(self.service))
        broker = self.service.broker
        if broker is None:
            raise HttpError(503, "this broker is a slave: only /api/health and /api/broker "
                                 "answer until it takes over")
        if method in ("POST", "DELETE"):
            self._require_admin(principal)
            # a web page elsewhere can make a browser POST a form or text/plain here, but not
            # JSON (that needs a CORS preflight we never grant): actions must say JSON
            content_type = (request.getHeader("content-type") or "").split(";")[0].strip()
            if method == "POST" and content_type != "application/json":
                raise HttpError(415, "actions take Content-Type: application/json")
        if path == ["api", "destinations"] and method == "GET":
            return self.destinations()
        if path[:2] == ["api", "destinations"] and len(path) >= 4:
            dest = self._destination(path[2], path[3])
            action = path[4:]
            if action == ["messages"] and method == "GET":
                broker.authorize(principal, "read", [dest])  # as a STOMP browser would need
                limit = int(request.args.get(b"limit", [b"100"])[0])
                return (yield self.browse(dest, limit))
            if action == ["purge"] and method == "POST":
                queue = self._queue(dest)
                count = yield broker.management.purge_queue(queue)
                log.info("admin: purged {n} messages from {dest}", n=count, dest=dest.stomp())
                return {"destination": dest.stomp(), "purged": count}
            if action == [] and method == "DELETE":
                return (yield self.delete(dest))
        if path == ["api", "send"] and method == "POST":
            return (yield self.send(request))
        if path == ["api", "connections"] and method == "GET":
            return self.connections()
        if path == ["api", "scheduler"] and method == "GET":
            return self.jobs()
        if path[:2] == ["api", "scheduler"] and len(path) == 3 and method == "DELETE":
            scheduler = self.service.scheduler
            if path[2] not in scheduler.jobs:
                raise HttpError(404, "no scheduled job %s" % path[2])
            yield scheduler.remove(path[2])
            return {"removed": path[2]}
        raise HttpError(404, "no such resource: %s %s" % (method, "/" + "/".join(path)))

    @staticmethod
    def _destination(kind: str, name: str) -> Destination:
        if kind not in (QUEUE, TOPIC) or not name:
            raise HttpError(404, "destinations are /api/destinations/queue/<name> or "
                                 "/api/destinations/topic/<name>")
        return Destination(kind, name)

    def _queue(self, dest: Destination):
        queue = self.service.broker.queues.get(dest) if dest.kind == QUEUE else None
        if queue is None:
            raise HttpError(404, "no such queue: %s" % dest.stomp())
        return queue

    # -- the answers -----------------------------------------------------------------------
    def health(self):
        role = self.role()
        return {"_status": 200 if role == "master" else 503, "role": role,
                "name": self.service.options["broker-name"]}

    def role(self) -> str:
        service = self.service
        if service.broker is not None and service.ready.called:
            return "master"
        return "slave" if service.broker is None else "starting"

    def broker_status(self) -> dict:
        service = self.service
        opts = service.options
        locker = service.locker
        status = {
            "name": opts["broker-name"], "version": __version__, "role": self.role(),
            "uptime": round(time.time() - self.started, 3),
            "lock": {"path": getattr(locker, "path", None),
                     "holder": locker.holder() if locker is not None else None},
        }
        broker = service.broker
        if broker is None:
            status["waiting_on"] = getattr(locker, "path", None)
            return status
        store = service.store
        status.update({
            "store": {"kind": opts["store"], "directory": os.path.realpath(opts["dir"]),
                      "size": store.size(), "message_bytes": store.stored_bytes(),
                      "failure": None if getattr(store, "failure", None) is None
                      else str(store.failure),
                      "group_commits": getattr(store, "batches", 0),
                      "operations": getattr(store, "batched_ops", 0)},
            "scheduler": {"jobs": len(service.scheduler.jobs) if service.scheduler else 0,
                          "directory": os.path.realpath(opts["scheduler-dir"])},
            "limits": broker.flow.status(),
            "connections": len(broker.connections),
            "listeners": dict(broker.management.connectors),
        })
        return status

    def destinations(self) -> list:
        broker = self.service.broker
        management = broker.management
        rows = []
        for dest, queue in sorted(broker.queues.items()):
            rows.append(_row(dest, management.queue_statistics(queue)))
        for topic in management.topic_names():
            rows.append(_row(topic, management.topic_statistics(topic)))
        return rows

    @defer.inlineCallbacks
    def browse(self, dest: Destination, limit: int):
        if dest.kind != QUEUE:
            raise HttpError(400, "only queues can be browsed")
        self._queue(dest)
        messages = yield self.service.broker.browse([dest], limit=max(limit, 0))
        return [_message(m) for m in messages]

    @defer.inlineCallbacks
    def delete(self, dest: Destination):
        broker = self.service.broker
        if dest.kind == QUEUE:
            count = yield broker.delete_queue(dest)
            log.info("admin: deleted {dest} ({n} messages)", dest=dest.stomp(), n=count)
            return {"deleted": dest.stomp(), "messages": count}
        subs = [s for s in broker.topic_subscriptions
                if any(kind == dest.kind and match(dest.name) for kind, match in s.patterns)]
        if subs:
            raise HttpError(409, "%s has %d subscription(s)" % (dest.stomp(), len(subs)))
        if broker.management.topics.pop(dest, None) is None:
            raise HttpError(404, "no such topic: %s" % dest.stomp())
        return {"deleted": dest.stomp()}

    @defer.inlineCallbacks
    def send(self, request):
        try:
            spec = json.loads(request.content.read() or b"{}")
            (prefix, name), = split_stomp(spec["destination"])
            dest = Destination(STOMP_PREFIXES[prefix], name)
            if dest.is_temporary:
                raise ValueError("not a temporary destination")
        except (ValueError, KeyError, TypeError, DestinationError) as e:
            raise HttpError(400, "send takes JSON {\"destination\": \"/queue/x\", \"body\": "
                                 "\"...\", \"persistent\": true, \"headers\": {}}: %s" % e)
        body = spec.get("body", "")
        if not isinstance(body, str):
            raise HttpError(400, "body must be a string")
        headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
        self._count = getattr(self, "_count", 0) + 1
        message = Message("ID:admin-%d-%d" % (int(self.started), self._count), dest,
                          body.encode("utf-8"),
                          properties=headers, persistent=bool(spec.get("persistent")))
        yield self.service.broker.publish([message])
        log.info("admin: sent a test message to {dest}", dest=dest.stomp())
        return {"sent": message.message_id, "destination": dest.stomp()}

    def connections(self) -> list:
        rows = []
        for session in list(self.service.broker.connections):
            consumers = list(session.subscriptions.values())
            principal = getattr(session, "principal", None)
            rows.append({
                "id": session.connection_id, "protocol": session.protocol,
                "remote": getattr(session, "peer", None), "client_id": session.client_id,
                "user": getattr(principal, "user", None),
                "subscriptions": [{"id": c.subscription_id,
                                   "destinations": [d.stomp() for d in c.destinations],
                                   "ack": c.ack_mode, "durable": c.durable_name,
                                   "in_flight": len(c.in_flight)} for c in consumers]})
        return sorted(rows, key=lambda r: r["id"])

    def jobs(self) -> list:
        scheduler = self.service.scheduler
        rows = []
        for job in scheduler.select():
            rows.append({"id": job.job_id, "next": job.next_time, "delay": job.delay,
                         "period": job.period, "repeat": job.repeat, "cron": job.cron,
                         "runs": job.runs, "created": job.created})
        return rows


def _row(dest: Destination, stats: dict) -> dict:
    return {"name": dest.stomp(), "kind": dest.kind, "pending": stats["size"],
            "enqueued": stats["enqueueCount"], "dequeued": stats["dequeueCount"],
            "dispatched": stats["dispatchCount"], "in_flight": stats["inflightCount"],
            "expired": stats["expiredCount"], "consumers": stats["consumerCount"],
            "producers": stats["producerCount"], "memory": stats["memoryUsage"]}


def _message(m: Message) -> dict:
    body = m.body[:BODY_PREVIEW]
    return {"message_id": m.message_id, "timestamp": m.timestamp, "persistent": m.persistent,
            "priority": m.priority, "expires": m.expires, "redelivered": m.redelivery_count > 0,
            "size": len(m.body), "headers": {k: str(v) for k, v in m.properties.items()},
            "body": body.decode("utf-8", "replace"),
            "truncated": len(m.body) > BODY_PREVIEW}
