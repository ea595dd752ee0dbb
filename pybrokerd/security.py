"""Authentication and authorization, as ActiveMQ's simple authentication plugin and its
authorization entries (no Twisted, no I/O).

Configured in the --config INI file::

    [users]
    # name = password hash, made by `pybroker passwd`
    alice = pbkdf2_sha256$200000$c2FsdA$...
    bob = pbkdf2_sha256$200000$...

    [groups]
    admins = alice
    producers = alice, bob
    consumers = bob

    [authorization]
    # queue:<pattern> | topic:<pattern> | temp  =  read: groups; write: groups; admin: groups
    queue:> = read: admins; write: admins; admin: admins
    queue:orders.> = read: consumers; write: producers; admin: producers
    topic:prices.* = read: *; write: producers
    temp = read: *; write: *; admin: *

Patterns use ActiveMQ's wildcards (``*`` one element, ``>`` the rest).  A destination's
allowed groups for an operation are the union over every entry whose pattern matches it (as
ActiveMQ's DefaultAuthorizationMap); with an [authorization] section, a destination no entry
matches is denied.  ``*`` as a group means every authenticated user (and anonymous clients,
when allowed).  ``admin`` is needed to create a destination that does not exist yet and for
the management destinations (scheduler, statistics, purge).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field

from pybrokerd.broker.destination import compile_pattern

__all__ = ["SecurityError", "ConfigError", "Principal", "Security", "hash_password",
           "verify_password", "ANONYMOUS"]

HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 200_000
OPERATIONS = ("read", "write", "admin")


class ConfigError(ValueError):
    """The security configuration cannot be used; str(e) says where and why."""


class SecurityError(Exception):
    """Refused; str(e) is ActiveMQ's wording where it has one."""


@dataclass(frozen=True)
class Principal:
    user: str
    groups: frozenset = field(default_factory=frozenset)
    anonymous: bool = False


ANONYMOUS = Principal("anonymous", frozenset(["anonymous"]), anonymous=True)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, iterations: int = HASH_ITERATIONS, salt: bytes | None = None) -> str:
    """A salted PBKDF2-SHA256 hash: pbkdf2_sha256$<iterations>$<salt>$<hash>."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return "%s$%d$%s$%s" % (HASH_SCHEME, iterations, _b64(salt), _b64(digest))


def _parse_hash(encoded: str):
    parts = encoded.strip().split("$")
    if len(parts) != 4 or parts[0] != HASH_SCHEME:
        raise ConfigError("not a %s hash (make one with `pybroker passwd`)" % HASH_SCHEME)
    try:
        iterations = int(parts[1])
        salt, digest = _unb64(parts[2]), _unb64(parts[3])
    except (ValueError, TypeError):
        raise ConfigError("malformed %s hash" % HASH_SCHEME) from None
    if iterations < 1 or not salt or len(digest) != 32:
        raise ConfigError("malformed %s hash" % HASH_SCHEME)
    return iterations, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of a password against a hash from hash_password."""
    iterations, salt, digest = _parse_hash(encoded)
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(candidate, digest)


# a hash to burn the same time on when the user does not exist (no timing hint); a
# constant, so that nothing is hashed at import time
_DUMMY_HASH = "pbkdf2_sha256$200000$cHlicm9rZXJkLWR1bW15IQ$R0VMN8jh2y4xOi7pW2ZQeXYKyk4LkRH9xw1WkJ1Ptj8"


@dataclass
class _Entry:
    kind: str            # "queue" | "topic" | "temp"
    pattern: str
    match: object
    acl: dict            # operation -> frozenset of groups ("*" = everyone)


class Security:
    """Who may connect, and what they may do.  Security() allows everything."""

    def __init__(self, users=None, groups=None, entries=None, anonymous=None):
        self.users: dict[str, str] = dict(users or {})
        self.user_groups: dict[str, frozenset] = {}
        for group, members in (groups or {}).items():
            for user in members:
                self.user_groups[user] = self.user_groups.get(user, frozenset()) | {group}
        self.entries: list[_Entry] | None = entries
        # anonymous clients: allowed by default only when no users are configured
        self.anonymous = (not self.users) if anonymous is None else anonymous

    @property
    def enabled(self) -> bool:
        return bool(self.users) or self.entries is not None

    # -- authentication ------------------------------------------------------------------
    def authenticate(self, login: str | None, passcode: str | None) -> Principal:
        """The principal for these credentials; SecurityError (ActiveMQ's text) if refused.
        No login at all is anonymous (if allowed); a login is always checked."""
        if not login:
            if self.anonymous:
                return ANONYMOUS
            raise SecurityError("User name [%s] or password is invalid." % (login or ""))
        encoded = self.users.get(login)
        ok = verify_password(passcode or "", encoded if encoded is not None else _DUMMY_HASH)
        if encoded is None or not ok:
            raise SecurityError("User name [%s] or password is invalid." % login)
        return Principal(login, self.user_groups.get(login, frozenset()))

    def authenticate_anonymous(self, login: str | None) -> Principal:
        """No users configured: anyone gets in, under the name they give."""
        if login:
            return Principal(login, frozenset(["anonymous"]), anonymous=True)
        return ANONYMOUS

    # -- authorization -------------------------------------------------------------------
    def allowed(self, principal: Principal, operation: str, kind: str, name: str,
                temporary: bool = False) -> bool:
        if self.entries is None:
            return True
        groups = set()
        for entry in self.entries:
            if entry.kind == "temp":
                if temporary:
                    groups |= entry.acl.get(operation, frozenset())
            elif not temporary and entry.kind == kind and entry.match(name):
                groups |= entry.acl.get(operation, frozenset())
        return "*" in groups or bool(groups & principal.groups)

    def check(self, principal: Principal, operation: str, kind: str, name: str,
              temporary: bool = False) -> None:
        if not self.allowed(principal, operation, kind, name, temporary):
            verb = {"read": "read from", "write": "write to", "admin": "create"}[operation]
            raise SecurityError("User %s is not authorized to %s: %s://%s"
                                % (principal.user, verb, "temp-" + kind if temporary else kind,
                                   name))

    # -- configuration -------------------------------------------------------------------
    @classmethod
    def from_ini(cls, parser, anonymous=None, where="config") -> "Security":
        """From a configparser with optional [users], [groups], [authorization] sections."""
        users = {}
        if parser.has_section("users"):
            for name, encoded in parser.items("users"):
                try:
                    _parse_hash(encoded)
                except ConfigError as e:
                    raise ConfigError("%s [users] %s: %s" % (where, name, e)) from None
                users[name] = encoded.strip()
        groups = {}
        if parser.has_section("groups"):
            for group, members in parser.items("groups"):
                names = [m.strip() for m in members.split(",") if m.strip()]
                unknown = [m for m in names if m not in users]
                if unknown:
                    raise ConfigError("%s [groups] %s: unknown user(s) %s"
                                      % (where, group, ", ".join(unknown)))
                groups[group] = names
        entries = None
        if parser.has_section("authorization"):
            entries = [_parse_entry(key, value, where)
                       for key, value in parser.items("authorization")]
        return cls(users, groups, entries, anonymous)


def _parse_entry(key: str, value: str, where: str) -> _Entry:
    key = key.strip()
    if key == "temp":
        kind, pattern = "temp", ">"
    else:
        kind, sep, pattern = key.partition(":")
        if not sep or kind not in ("queue", "topic") or not pattern:
            raise ConfigError("%s [authorization] %r: expected queue:<pattern>, "
                              "topic:<pattern> or temp" % (where, key))
    acl = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        operation, sep, names = part.partition(":")
        operation = operation.strip().lower()
        if not sep or operation not in OPERATIONS:
            raise ConfigError("%s [authorization] %s: expected 'read: groups; write: groups; "
                              "admin: groups', got %r" % (where, key, part.strip()))
        acl[operation] = frozenset(g.strip() for g in names.split(",") if g.strip())
    return _Entry(kind, pattern, compile_pattern(pattern) if kind != "temp" else None, acl)
