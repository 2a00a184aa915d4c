# -*- test-case-name: tests.test_tokens -*-
"""``pypicache-admin token create|list|revoke``: access tokens of a cache
folder, or of a bucket.

A running daemon sees every change at the token's next use (it reads
``DIR/tokens.json`` again when it changes). With ``--storage s3://B/P`` the
command changes the bucket's ``state/tokens.json`` itself, with conditional
writes as the daemons do (:meth:`~pypicache.storage.state.IState.change_state`):
every daemon on the bucket honours the change within its ``state_max_age``
(2 s), with no daemon on this host.
"""

import datetime
import time
from typing import Any, TextIO

import attrs
from twisted.python import usage

from pypicache.errors import PypicacheError
from pypicache.index.names import normalize
from pypicache.tap.adminbucket import bucket_store, wait
from pypicache.tap.s3opts import S3StoreOptions
from pypicache.tap.values import duration as _duration
from pypicache.web.tokens import (
    TOKENS_FILE,
    TokenRecord,
    create_token,
    new_token,
    read_tokens,
    revoke_token,
    tokens_path,
)


class _TokenCacheOptions(S3StoreOptions, usage.Options):
    optParameters = [
        [
            "cache",
            "c",
            None,
            "The daemon's --cache folder (not with --storage s3://...).",
        ]
    ]

    def postOptions(self) -> None:
        # Checked here, not by the admin's cache options: a sub-sub-command.
        import os

        self.read_storage()
        if self.s3 is not None:
            self["path"] = f"{self['storage'].rstrip('/')}/state/{TOKENS_FILE}"
            return
        if not self["cache"] or not os.path.isdir(self["cache"]):
            raise usage.UsageError("--cache must name an existing cache folder")
        self["path"] = tokens_path(os.path.abspath(self["cache"]))


class CreateOptions(_TokenCacheOptions):
    synopsis = (
        "--cache DIR | --storage s3://B/P [--s3-...] --user NAME [--project P]... "
        "[--read-only] [--expires AGE] "
        "[--description TEXT]"
    )
    optFlags = [["read-only", None, "The token may only read."]]
    optParameters = [
        ["user", "u", None, "Whose token it is (shown in logs and upload records)."],
        ["expires", None, None, "How long it is good for (90d, 12h...).", _duration],
        ["description", None, "", "What it is for (shown by token list)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["projects"] = []

    def opt_project(self, name: str) -> None:
        """A project the token may upload to, yank and delete in (repeatable;
        none: every project)."""
        try:
            self["projects"].append(normalize(name))
        except Exception as e:
            raise usage.UsageError(f"--project: {e}") from e

    def postOptions(self) -> None:
        super().postOptions()
        if not self["user"] or ":" in self["user"] or self["user"] == "__token__":
            raise usage.UsageError("--user must name a user (no ':', not __token__)")
        if self["read-only"] and self["projects"]:
            raise usage.UsageError(
                "a --read-only token changes no project: no --project"
            )


class ListOptions(_TokenCacheOptions):
    synopsis = "--cache DIR | --storage s3://B/P [--s3-...]"


class RevokeOptions(_TokenCacheOptions):
    synopsis = "--cache DIR | --storage s3://B/P [--s3-...] ID"

    def parseArgs(self, token_id: str) -> None:
        self["id"] = token_id


class TokenOptions(usage.Options):
    synopsis = "create|list|revoke --cache DIR | --storage s3://B/P ..."
    subCommands = [
        ["create", None, CreateOptions, "Make a token and print it (once)."],
        ["list", None, ListOptions, "Show the tokens (never their secrets)."],
        ["revoke", None, RevokeOptions, "Revoke a token at once."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("name a command: create, list, revoke")


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class _InBucket:
    """The token functions of :mod:`pypicache.web.tokens` on the bucket's
    document of tokens (``state/tokens.json``), changed as the daemons do."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def _change(self, change: Any) -> None:
        wait(self.store.change_state(TOKENS_FILE, change))

    def read(self) -> dict[str, TokenRecord]:
        doc = wait(self.store.read_state(TOKENS_FILE))
        known = doc.data.get("tokens") or {}
        return {key: TokenRecord.from_json(value) for key, value in known.items()}

    def create(self, user: str, now: float, **scope: Any) -> tuple[str, TokenRecord]:
        token, record = new_token(self.read(), user, now, **scope)

        def add(data: dict[str, Any]) -> dict[str, Any]:
            known = dict(data.get("tokens") or {})
            if record.id in known:
                raise PypicacheError("a token of that id was made meanwhile: again")
            return {**data, "tokens": {**known, record.id: record.to_json()}}

        self._change(add)
        return token, record

    def revoke(self, token_id: str, now: float) -> TokenRecord:
        found: list[TokenRecord] = []

        def revoke(data: dict[str, Any]) -> dict[str, Any] | None:
            known = dict(data.get("tokens") or {})
            record = TokenRecord.from_json(known[token_id])  # KeyError: none
            found[:] = [record]
            if record.revoked is not None:
                return None  # the earliest revocation stays
            found[:] = [attrs.evolve(record, revoked=now)]
            return {**data, "tokens": {**known, token_id: found[0].to_json()}}

        self._change(revoke)
        return found[0]


def token(options: Any, out: TextIO, err: TextIO) -> int:
    """Run ``pypicache-admin token ...``."""
    sub = options.subOptions
    if sub.s3 is None:
        return _token(options, out, err, None)
    with bucket_store(sub.s3, None) as store:
        return _token(options, out, err, _InBucket(store))


def _token(options: Any, out: TextIO, err: TextIO, bucket: _InBucket | None) -> int:
    command, sub = options.subCommand, options.subOptions
    now = time.time()
    if command == "create":
        expires = now + sub["expires"] if sub["expires"] is not None else None
        scope = {
            "projects": tuple(sub["projects"]),
            "read_only": bool(sub["read-only"]),
            "expires": expires,
            "description": sub["description"],
        }
        if bucket is None:
            secret, record = create_token(sub["path"], sub["user"], now, **scope)
        else:
            secret, record = bucket.create(sub["user"], now, **scope)
        out.write(f"{secret}\n")
        err.write(
            f"Token {record.id} for {record.user} (shown once: keep it now). "
            "Use it as the password of the user __token__.\n"
        )
        return 0
    if command == "list":
        try:
            records = read_tokens(sub["path"]) if bucket is None else bucket.read()
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            err.write(f"{sub['path']} is not a token file: {e}\n")
            return 1
        for record in sorted(records.values(), key=lambda r: r.created):
            scope_text = (
                "read-only"
                if record.read_only
                else (",".join(record.projects) or "all projects")
            )
            out.write(
                f"{record.id}  {record.user}  {scope_text}  {record.state(now)}  "
                f"created {_when(record.created)}  expires {_when(record.expires)}"
                f"{'  ' + record.description if record.description else ''}\n"
            )
        return 0
    try:
        if bucket is None:
            record = revoke_token(sub["path"], sub["id"], now)
        else:
            record = bucket.revoke(sub["id"], now)
    except KeyError:
        err.write(f"No token {sub['id']!r} in {sub['path']}\n")
        return 1
    out.write(f"Revoked token {record.id} of {record.user}.\n")
    return 0
