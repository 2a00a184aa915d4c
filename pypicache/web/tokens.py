# -*- test-case-name: tests.test_tokens -*-
"""Access tokens: made by ``pypicache-admin token``, used as the password of
the user ``__token__`` (as on the public index), scoped to projects or
read-only, revoked at once.

A token is ``pypicache-<id>-<secret>``: the id names its record in
``DIR/tokens.json`` (so a check is one lookup, not a scan), the secret is 32
random bytes kept only as their sha256 (it has too much entropy for a slow
hash to add anything). The file is written atomically under a lock by the
admin command and read again by the daemon whenever it changes, so a revoked
token fails on its next use without a restart. On S3 the daemon merges it
into the bucket's ``state/tokens.json``, which every daemon on the bucket
checks tokens against (:class:`TokenChecker`).
"""

import hashlib
import hmac
import json
import os
import secrets
from typing import Any

import attrs
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from pypicache.errors import Forbidden
from pypicache.storage.atomic import write_atomically
from pypicache.storage.locks import try_lock
from pypicache.storage.shared import SharedDoc

#: The user name a token is given with.
TOKEN_USER = b"__token__"

#: What every token starts with.
PREFIX = "pypicache-"

#: The file of the records, under the cache folder.
TOKENS_FILE = "tokens.json"

_ID_LENGTH = 12

log = Logger()


@attrs.frozen
class TokenRecord:
    """What is kept of one token (never the secret)."""

    id: str
    user: str
    sha256: str
    created: float
    projects: tuple[str, ...] = ()
    read_only: bool = False
    expires: float | None = None
    description: str = ""
    revoked: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "projects": list(self.projects)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TokenRecord":
        names = {a.name for a in attrs.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["projects"] = tuple(values.get("projects", ()))
        return cls(**values)

    def state(self, now: float) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"


@attrs.frozen
class Identity:
    """Who made a request: a user, and the token used if any."""

    user: str
    token: TokenRecord | None = None

    def __str__(self) -> str:
        return (
            self.user if self.token is None else f"{self.user} (token {self.token.id})"
        )

    def check_change(self, project: str | None) -> None:
        """Refuse a change to ``project`` (``None``: to no one project) that
        this identity's token does not allow.

        :raises Forbidden: a read-only token, or a token scoped to other projects.
        """
        token = self.token
        if token is None:
            return
        if token.read_only:
            raise Forbidden(f"Token {token.id} is read-only")
        if token.projects and project not in token.projects:
            scope = ", ".join(token.projects)
            what = f"project {project!r}" if project else "this"
            raise Forbidden(f"Token {token.id} may change only {scope}, not {what}")


def tokens_path(root: str) -> str:
    return os.path.join(root, TOKENS_FILE)


def read_tokens(path: str) -> dict[str, TokenRecord]:
    """The records in ``path`` by id (none if it is missing; blocking).

    :raises ValueError: the file is not a token file.
    """
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return {}
    return {key: TokenRecord.from_json(value) for key, value in data["tokens"].items()}


def _write(path: str, records: dict[str, TokenRecord]) -> None:
    content = {"tokens": {k: r.to_json() for k, r in records.items()}}
    from twisted.python.filepath import FilePath

    write_atomically(FilePath(path), json.dumps(content, indent=1).encode())
    os.chmod(path, 0o600)


def _locked(path: str) -> Any:
    held = try_lock(path + ".lock", wait=True)
    assert held is not None
    return held


def create_token(
    path: str, user: str, now: float, **scope: Any
) -> tuple[str, TokenRecord]:
    """Make a token and keep its record; return the token (shown once) and
    it. ``scope``: :func:`new_token`'s ``projects``, ``read_only``,
    ``expires`` and ``description``."""
    held = _locked(path)
    try:
        records = read_tokens(path)
        token, record = new_token(records, user, now, **scope)
        records[record.id] = record
        _write(path, records)
    finally:
        held.release()
    return token, record


def new_token(
    taken: Any,
    user: str,
    now: float,
    projects: tuple[str, ...] = (),
    read_only: bool = False,
    expires: float | None = None,
    description: str = "",
) -> tuple[str, TokenRecord]:
    """A new token (shown once) and its record, its id not in ``taken``."""
    secret = secrets.token_urlsafe(32)
    token_id = secrets.token_hex(_ID_LENGTH // 2)
    while token_id in taken:
        token_id = secrets.token_hex(_ID_LENGTH // 2)
    record = TokenRecord(
        id=token_id,
        user=user,
        sha256=hashlib.sha256(secret.encode()).hexdigest(),
        created=now,
        projects=projects,
        read_only=read_only,
        expires=expires,
        description=description,
    )
    return f"{PREFIX}{token_id}-{secret}", record


def revoke_token(path: str, token_id: str, now: float) -> TokenRecord:
    """Mark a token revoked (it fails from its next use on).

    :raises KeyError: no such token.
    """
    held = _locked(path)
    try:
        records = read_tokens(path)
        record = attrs.evolve(records[token_id], revoked=now)
        records[token_id] = record
        _write(path, records)
    finally:
        held.release()
    return record


def merged_tokens(
    data: dict[str, Any], records: dict[str, TokenRecord]
) -> dict[str, Any] | None:
    """The document of tokens ``data`` with ``records`` added: a token known
    to both keeps the earliest revocation (revoked anywhere: revoked), so
    documents merged in any order agree; ``None`` if nothing changes.

    :raises ValueError: ``data`` is not a document of tokens.
    """
    known = dict(data.get("tokens") or {})
    if not isinstance(known, dict):
        raise ValueError("not a document of tokens")
    changed = False
    for token_id, record in records.items():
        theirs = known.get(token_id)
        if theirs is None:
            known[token_id] = record.to_json()
            changed = True
            continue
        revoked = [r for r in (theirs.get("revoked"), record.revoked) if r is not None]
        if revoked and theirs.get("revoked") != min(revoked):
            known[token_id] = {**theirs, "revoked": min(revoked)}
            changed = True
    return {"tokens": known} if changed else None


class TokenChecker:
    """Checks tokens against the store's state document ``tokens.json``
    (:mod:`pypicache.storage.state`: ``DIR/tokens.json``, or the object in the
    bucket every daemon on it shares), revalidated as the store says.

    ``pypicache-admin token`` writes ``DIR/tokens.json`` of the host it runs
    on; when that file changes its tokens are merged into the store's
    document (the same file on disk: nothing to do), so that a token made or
    revoked on one daemon's host works, or fails, on every daemon.

    :param state: the store (an :class:`~pypicache.storage.state.IState`).
    :param local_path: ``DIR/tokens.json`` of this host.
    """

    def __init__(self, state: Any, clock: Any, local_path: str | None = None) -> None:
        self._doc = SharedDoc(state, TOKENS_FILE)
        self._clock = clock
        self._local_path = local_path
        self._local_stamp: tuple[int, int, int] | None = None
        self._turn = -1
        self._records: dict[str, TokenRecord] = {}

    def _local_changes(self) -> Any:
        """Merge the local file into the document if it changed (a Deferred), else ``None``."""
        if self._local_path is None:
            return None
        try:
            st = os.stat(self._local_path)
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._local_stamp:
            return None
        self._local_stamp = stamp
        try:
            records = read_tokens(self._local_path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warn("{path} is not a token file: {e}", path=self._local_path, e=e)
            return None
        return Deferred.fromCoroutine(
            self._doc.change(lambda data: merged_tokens(data, records))
        ).addErrback(
            lambda f: log.warn(
                "Cannot share the tokens of {path}: {reason}",
                path=self._local_path,
                reason=f.getErrorMessage(),
            )
        )

    def publish(self) -> None:
        """Merge this host's ``tokens.json`` into the store's document if it
        changed (every second, from ``tap/service.py``: a token made with
        ``pypicache-admin`` here works on every daemon without waiting for
        a request here first)."""
        self._local_changes()

    def ready(self) -> Any:
        """``None`` if :meth:`check` answers as things are now (within the
        store's ``state_max_age``), else a Deferred to wait for first."""
        waits = [
            d
            for d in (self._local_changes(), self._doc.ready())
            if d is not None and not d.called
        ]
        if not waits:
            return None
        return waits[0] if len(waits) == 1 else gatherResults(waits)

    def _current(self) -> dict[str, TokenRecord]:
        data = self._doc.data
        if self._doc.turn != self._turn:
            self._turn = self._doc.turn
            try:
                self._records = {
                    key: TokenRecord.from_json(value)
                    for key, value in (data.get("tokens") or {}).items()
                }
            except (ValueError, KeyError, TypeError, AttributeError):
                self._records = {}  # unreadable: no token is good
        return self._records

    def check(self, token: bytes) -> TokenRecord:
        """The record of a good token.

        :raises UnauthorizedLogin: unknown, wrong, expired or revoked.
        """
        text = token.decode("ascii", "replace")
        if not text.startswith(PREFIX):
            raise UnauthorizedLogin("not a pypicache token")
        token_id, dash, secret = text[len(PREFIX) :].partition("-")
        record = self._current().get(token_id) if dash else None
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if record is None or not hmac.compare_digest(digest, record.sha256):
            raise UnauthorizedLogin("unknown token")
        state = record.state(self._clock.seconds())
        if state != "active":
            raise UnauthorizedLogin(f"token {token_id} is {state}")
        return record
