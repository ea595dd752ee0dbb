"""Parse the broker URLs ActiveMQ users write, for a STOMP (failover) client.

Accepted forms::

    tcp://host:61613            stomp://host          stomp+nio://host
    ssl://host:61614            stomp+ssl://host      stomp+nio+ssl://host
    tcp://[::1]:61613
    failover:(tcp://a:61613,tcp://b:61613)?randomize=false&timeout=3000
    failover://(tcp://a,tcp://b)?...
    failover:tcp://a:61613,tcp://b:61613          (no options possible)

Failover options carry ActiveMQ's names and defaults, plus two of ours:
``reconnectDelayJitter`` (ms) and ``startupTimeout`` (ms).  Unknown options,
badly typed values and meaningless negative values raise :class:`URLError`.
A plain (non-failover) URL takes no options at all.

Like ActiveMQ, in the parenthesis-less failover form a ``?query`` belongs to
the last endpoint, not to the failover transport; since endpoints take no
options this is an error whose message points at the parenthesized form.
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
from dataclasses import dataclass, fields
from typing import Iterator, Optional
from urllib.parse import unquote

__all__ = [
    "URLError", "Endpoint", "FailoverOptions", "BrokerURL",
    "parse_url", "reconnect_delays", "attempt_limit",
    "DEFAULT_PORTS", "SCHEMES",
]


class URLError(ValueError):
    """A broker URL that cannot be used."""


# URL scheme -> transport scheme of the Endpoint.
SCHEMES = {
    "tcp": "tcp",
    "stomp": "tcp",
    "stomp+nio": "tcp",
    "ssl": "ssl",
    "stomp+ssl": "ssl",
    "stomp+nio+ssl": "ssl",
}
DEFAULT_PORTS = {"tcp": 61613, "ssl": 61614}


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # "tcp" | "ssl"
    host: str    # IPv6 literals without brackets
    port: int


@dataclass(frozen=True)
class FailoverOptions:
    initial_reconnect_delay: int = 10           # ms
    max_reconnect_delay: int = 30000            # ms
    use_exponential_backoff: bool = True
    backoff_multiplier: float = 2.0
    max_reconnect_attempts: int = -1            # -1 forever, 0 no retry
    startup_max_reconnect_attempts: int = -1    # before first connect; -1 = use the above
    randomize: bool = True
    timeout: int = -1                           # ms a send waits for reconnection; -1 forever
    track_messages: bool = False
    max_cache_size: int = 131072
    priority_backup: bool = False
    reconnect_delay_jitter: int = 0             # ms, ours (stompest's name)
    startup_timeout: int = -1                   # ms, ours; -1 forever


@dataclass(frozen=True)
class BrokerURL:
    endpoints: tuple[Endpoint, ...]
    failover: bool
    options: FailoverOptions


# --------------------------------------------------------------------------
# option table: URL name -> (attribute, kind, minimum or None)

_OPTIONS = {
    "initialReconnectDelay": ("initial_reconnect_delay", int, 0),
    "maxReconnectDelay": ("max_reconnect_delay", int, 0),
    "useExponentialBackOff": ("use_exponential_backoff", bool, None),
    "backOffMultiplier": ("backoff_multiplier", float, 1.0),
    "maxReconnectAttempts": ("max_reconnect_attempts", int, -1),
    "startupMaxReconnectAttempts": ("startup_max_reconnect_attempts", int, -1),
    "randomize": ("randomize", bool, None),
    "timeout": ("timeout", int, -1),
    "trackMessages": ("track_messages", bool, None),
    "maxCacheSize": ("max_cache_size", int, 0),
    "priorityBackup": ("priority_backup", bool, None),
    "reconnectDelayJitter": ("reconnect_delay_jitter", int, 0),
    "startupTimeout": ("startup_timeout", int, -1),
}
assert {a for a, _, _ in _OPTIONS.values()} == {f.name for f in fields(FailoverOptions)}

_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_HOST_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\Z")
_PORT_RE = re.compile(r"[0-9]{1,5}\Z")


def _valid_names():
    return ", ".join(sorted(_OPTIONS))


def _convert(name, raw):
    attr, kind, minimum = _OPTIONS[name]
    if kind is bool:
        low = raw.lower()
        if low not in ("true", "false"):
            raise URLError(f"option {name}={raw!r}: expected true or false")
        return attr, low == "true"
    if kind is int:
        if not _INT_RE.match(raw):
            raise URLError(f"option {name}={raw!r}: expected an integer")
        value = int(raw)
    else:
        if not _FLOAT_RE.match(raw):
            raise URLError(f"option {name}={raw!r}: expected a number")
        value = float(raw)
        if not math.isfinite(value):
            raise URLError(f"option {name}={raw!r}: expected a finite number")
    if minimum is not None and value < minimum:
        raise URLError(f"option {name}={raw!r}: must be >= {minimum:g}")
    return attr, value


def _parse_options(query):
    values = {}
    seen = set()
    if query == "":
        return FailoverOptions()
    for part in query.split("&"):
        if not part:
            raise URLError(f"empty option in query {query!r}")
        if "=" not in part:
            raise URLError(f"option {part!r} has no value (expected name=value)")
        name, raw = part.split("=", 1)
        name, raw = unquote(name).strip(), unquote(raw).strip()
        if name not in _OPTIONS:
            raise URLError(f"unknown failover option {name!r}; valid options are: {_valid_names()}")
        if name in seen:
            raise URLError(f"option {name!r} given more than once")
        seen.add(name)
        attr, value = _convert(name, raw)
        values[attr] = value
    return FailoverOptions(**values)


def _parse_endpoint(text):
    original = text
    text = text.strip()
    if not text:
        raise URLError("empty broker URL")
    if "://" not in text:
        raise URLError(f"{original!r}: expected scheme://host[:port]")
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise URLError(f"{original!r}: unknown scheme {scheme!r}; valid schemes are: "
                       + ", ".join(sorted(SCHEMES)) + ", failover")
    if "?" in rest:
        raise URLError(f"{original!r}: options are not allowed on a {scheme}:// endpoint"
                       " (failover options go after the parentheses: failover:(...)?name=value)")
    if "#" in rest:
        raise URLError(f"{original!r}: fragments are not allowed")
    if rest.endswith("/"):
        rest = rest[:-1]
    if "/" in rest:
        raise URLError(f"{original!r}: a broker URL has no path")
    if "@" in rest:
        raise URLError(f"{original!r}: user info is not supported in the URL")
    if any(c in rest for c in "(), \t"):
        raise URLError(f"{original!r}: invalid character in host:port")
    transport = SCHEMES[scheme]
    port_text = None
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise URLError(f"{original!r}: unterminated IPv6 address")
        host = rest[1:close]
        after = rest[close + 1:]
        if after:
            if not after.startswith(":"):
                raise URLError(f"{original!r}: junk after IPv6 address")
            port_text = after[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise URLError(f"{original!r}: invalid IPv6 address {host!r}") from None
    else:
        if "]" in rest:
            raise URLError(f"{original!r}: unbalanced ']'")
        if rest.count(":") > 1:
            raise URLError(f"{original!r}: IPv6 addresses must be bracketed, e.g. [::1]:61613")
        host, sep, port_text = rest.partition(":")
        if not sep:
            port_text = None
        if not host:
            raise URLError(f"{original!r}: no host")
        if not _HOST_RE.match(host):
            raise URLError(f"{original!r}: invalid host {host!r}")
    if not host:
        raise URLError(f"{original!r}: no host")
    if port_text is None:
        port = DEFAULT_PORTS[transport]
    else:
        if not _PORT_RE.match(port_text):
            raise URLError(f"{original!r}: invalid port {port_text!r}")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise URLError(f"{original!r}: port {port} out of range 1-65535")
    return Endpoint(transport, host, port)


def _parse_failover(text, body):
    body = body.strip()
    if body.startswith("//"):
        body = body[2:].lstrip()
    depth = 0
    for c in body:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise URLError(f"{text!r}: unbalanced parentheses")
    if depth != 0:
        raise URLError(f"{text!r}: unbalanced parentheses")
    if body.startswith("("):
        close = body.index(")")
        inner, after = body[1:close], body[close + 1:].strip()
        if "(" in inner:
            raise URLError(f"{text!r}: nested composite URLs are not supported")
        if after and not after.startswith("?"):
            raise URLError(f"{text!r}: unexpected {after!r} after ')'")
        query = after[1:]
        if "#" in query:
            raise URLError(f"{text!r}: fragments are not allowed")
    else:
        if "(" in body:
            raise URLError(f"{text!r}: '(' must directly follow 'failover:'")
        inner, query = body, ""
    if not inner.strip():
        raise URLError(f"{text!r}: empty failover list")
    endpoints = []
    for part in inner.split(","):
        if not part.strip():
            raise URLError(f"{text!r}: empty entry in failover list")
        if part.strip().lower().startswith("failover:"):
            raise URLError(f"{text!r}: nested failover URLs are not supported")
        endpoints.append(_parse_endpoint(part))
    return BrokerURL(tuple(endpoints), True, _parse_options(query))


def parse_url(text: str) -> BrokerURL:
    """Parse a plain or failover broker URL; raise URLError if it is unusable."""
    if not isinstance(text, str):
        raise URLError(f"broker URL must be a string, not {type(text).__name__}")
    stripped = text.strip()
    head, sep, body = stripped.partition(":")
    if sep and head.lower() == "failover":
        return _parse_failover(text, body)
    if "(" in stripped or ")" in stripped or "," in stripped:
        raise URLError(f"{text!r}: several brokers or parentheses need failover:(...)")
    return BrokerURL((_parse_endpoint(stripped),), False, FailoverOptions())


def reconnect_delays(options: FailoverOptions, rng=random) -> Iterator[float]:
    """Yield, in seconds, the delays before reconnect attempts 2, 3, ...

    Follows ActiveMQ's FailoverTransport: start at initialReconnectDelay,
    multiply by backOffMultiplier after each failure when
    useExponentialBackOff, never exceed maxReconnectDelay (an initial delay
    above the maximum is capped too, unlike ActiveMQ); then add a uniform
    jitter in [0, reconnectDelayJitter] ms.  Infinite: the caller applies
    :func:`attempt_limit`.  ``rng`` is only consulted when jitter > 0.
    """
    delay = float(min(options.initial_reconnect_delay, options.max_reconnect_delay))
    jitter = options.reconnect_delay_jitter
    while True:
        extra = rng.uniform(0, jitter) if jitter > 0 else 0.0
        yield (delay + extra) / 1000.0
        if options.use_exponential_backoff and delay < options.max_reconnect_delay:
            delay = min(delay * options.backoff_multiplier, float(options.max_reconnect_delay))


def attempt_limit(options: FailoverOptions, connected_before: bool) -> Optional[int]:
    """Maximum number of reconnect attempts (retries) allowed; None = unlimited.

    Before the first successful connect startupMaxReconnectAttempts applies
    unless it is -1, then maxReconnectAttempts (as ActiveMQ does).  0 means one
    try and no retry.  A plain (non-failover) URL should be treated as 0.
    """
    limit = options.max_reconnect_attempts
    if not connected_before and options.startup_max_reconnect_attempts != -1:
        limit = options.startup_max_reconnect_attempts
    return None if limit == -1 else limit
