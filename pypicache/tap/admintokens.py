# -*- test-case-name: tests.test_tokens -*-
"""``pypicache-admin token create|list|revoke``: access tokens of a cache folder.

A running daemon sees every change at the token's next use (it reads
``DIR/tokens.json`` again when it changes).
"""

import datetime
import time
from typing import Any, TextIO

from twisted.python import usage

from pypicache.index.names import normalize
from pypicache.tap.values import duration as _duration
from pypicache.web.tokens import create_token, read_tokens, revoke_token, tokens_path


class _TokenCacheOptions(usage.Options):
    optParameters = [["cache", "c", None, "The daemon's --cache folder."]]

    def postOptions(self) -> None:
        # Checked here, not by the admin's cache options: a sub-sub-command.
        import os

        if not self["cache"] or not os.path.isdir(self["cache"]):
            raise usage.UsageError("--cache must name an existing cache folder")
        self["path"] = tokens_path(os.path.abspath(self["cache"]))


class CreateOptions(_TokenCacheOptions):
    synopsis = (
        "--cache DIR --user NAME [--project P]... [--read-only] [--expires AGE] "
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
    synopsis = "--cache DIR"


class RevokeOptions(_TokenCacheOptions):
    synopsis = "--cache DIR ID"

    def parseArgs(self, token_id: str) -> None:
        self["id"] = token_id


class TokenOptions(usage.Options):
    synopsis = "create|list|revoke --cache DIR ..."
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


def token(options: Any, out: TextIO, err: TextIO) -> int:
    """Run ``pypicache-admin token ...``."""
    command, sub = options.subCommand, options.subOptions
    now = time.time()
    if command == "create":
        expires = now + sub["expires"] if sub["expires"] is not None else None
        secret, record = create_token(
            sub["path"],
            sub["user"],
            now,
            projects=tuple(sub["projects"]),
            read_only=bool(sub["read-only"]),
            expires=expires,
            description=sub["description"],
        )
        out.write(f"{secret}\n")
        err.write(
            f"Token {record.id} for {record.user} (shown once: keep it now). "
            "Use it as the password of the user __token__.\n"
        )
        return 0
    if command == "list":
        try:
            records = read_tokens(sub["path"])
        except (ValueError, KeyError, TypeError) as e:
            err.write(f"{sub['path']} is not a token file: {e}\n")
            return 1
        for record in sorted(records.values(), key=lambda r: r.created):
            scope = (
                "read-only"
                if record.read_only
                else (",".join(record.projects) or "all projects")
            )
            out.write(
                f"{record.id}  {record.user}  {scope}  {record.state(now)}  "
                f"created {_when(record.created)}  expires {_when(record.expires)}"
                f"{'  ' + record.description if record.description else ''}\n"
            )
        return 0
    try:
        record = revoke_token(sub["path"], sub["id"], now)
    except KeyError:
        err.write(f"No token {sub['id']!r} in {sub['path']}\n")
        return 1
    out.write(f"Revoked token {record.id} of {record.user}.\n")
    return 0
