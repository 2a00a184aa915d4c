# -*- test-case-name: tests.test_tap -*-
"""The command line of ``twistd pypicache``: options, their defaults and checks."""

import os
import sys
from typing import Sequence
from urllib.parse import urlsplit

from twisted.python import usage

from pypicache.bulk.cacher import (
    DEFAULT_MAX_LINES,
    DEFAULT_MAX_PROJECTS,
    DEFAULT_MAX_ROUNDS,
)
from pypicache.errors import BadRequest
from pypicache.index.names import normalize
from pypicache.proxy.blocklist import parse_entry
from pypicache.proxy.outbound import proxy_settings, read_ca_bundle
from pypicache.proxy.upstream import MAX_PAGE_SIZE
from pypicache.tap.config import apply_config, given_on_command_line, read_config
from pypicache.tap.cooldownopts import CooldownOptions
from pypicache.tap.prefetchopts import PrefetchOptions
from pypicache.tap.s3opts import S3Options
from pypicache.tap.upstreamopts import UpstreamOptions
from pypicache.tap.values import (
    duration,
    pip_index_url,
    positive,
    rate,
    size,
    withdrawn_mode,
    yes_no,
)
from pypicache.web.access import parse_cidr
from pypicache.web.attempts import DEFAULT_FAILURES, DEFAULT_WINDOW
from pypicache.web.limits import DEFAULT_MAX_BODY

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"

#: The most ``--workers``: more processes than cores only add memory.
MAX_WORKERS = 64


class Options(
    CooldownOptions, UpstreamOptions, S3Options, PrefetchOptions, usage.Options
):
    """``twistd pypicache`` options."""

    synopsis = (
        "--cache DIR [--index-url URL] [--listen ENDPOINT]... [--page-ttl SECONDS]"
    )
    longdesc = "A caching proxy and private index for Python packages."

    optFlags = [
        [
            "read-auth",
            None,
            "Reads need credentials from --auth-file too (/health stays open).",
        ],
        [
            "trust-proxy",
            None,
            "Believe X-Forwarded-For / Forwarded for the client's address (behind a reverse proxy).",
        ],
    ]

    optParameters = [
        [
            "cache",
            "c",
            None,
            "Folder of the cache and the private packages (created if missing). Required.",
        ],
        [
            "index-url",
            "i",
            None,
            "Upstream simple index (default: the index pip uses).",
        ],
        ["page-ttl", None, 600.0, "Seconds a cached project page is fresh.", positive],
        [
            "timeout",
            None,
            30.0,
            "Seconds to wait for the upstream to answer or to send more bytes.",
            positive,
        ],
        [
            "page-deadline",
            None,
            120.0,
            "Seconds an upstream project page may take in all (then the stale page, or 504).",
            positive,
        ],
        [
            "min-rate",
            None,
            8 * 1024,
            "Bytes per second an upstream body must average over each --timeout "
            "(suffixes K, M allowed; 0 turns the check off).",
            rate,
        ],
        [
            "max-page-size",
            None,
            MAX_PAGE_SIZE,
            "Largest upstream project page, decompressed (suffixes K, M, G allowed).",
            size,
        ],
        [
            "max-upload-size",
            None,
            DEFAULT_MAX_BODY,
            "Largest request body in bytes (suffixes K, M, G allowed).",
            size,
        ],
        [
            "workers",
            None,
            1,
            "Processes that serve requests, sharing the listening sockets "
            "(above 1, the twistd process holds the sockets and runs them).",
            int,
        ],
        [
            "bulk-concurrency",
            None,
            8,
            "Downloads at once per POST /requirements.txt or /+warm.",
            int,
        ],
        [
            "bulk-auth",
            None,
            None,
            "yes: POST /requirements.txt and /+warm need a user from --auth-file, as uploads "
            "do; no: it is a read (default: yes with --auth-file, else no).",
            yes_no,
        ],
        [
            "metrics-auth",
            None,
            False,
            "yes: GET /metrics and /+stats need a user from --auth-file (and the "
            "home page shows no figures); no: they are reads (default: no).",
            yes_no,
        ],
        [
            "bulk-jobs-per-client",
            None,
            2,
            "POST /requirements.txt and /+warm jobs one client address may run at once (then 429).",
            int,
        ],
        [
            "bulk-max-lines",
            None,
            DEFAULT_MAX_LINES,
            "Lines a requirements file may have (then 413).",
            int,
        ],
        [
            "bulk-max-projects",
            None,
            DEFAULT_MAX_PROJECTS,
            "Distinct projects a requirements file may name (then 422).",
            int,
        ],
        [
            "bulk-max-rounds",
            None,
            DEFAULT_MAX_ROUNDS,
            "Rounds one resolution may take before its requirements are reported unresolved.",
            int,
        ],
        [
            "auth-file",
            None,
            None,
            "htpasswd file (bcrypt entries, htpasswd -B) of the users who may upload, delete and yank.",
        ],
        [
            "auth-failures",
            None,
            DEFAULT_FAILURES,
            "Failed logins per client address within --auth-failure-window before 429.",
            int,
        ],
        [
            "auth-failure-window",
            None,
            DEFAULT_WINDOW,
            "Seconds over which --auth-failures are counted.",
            positive,
        ],
        [
            "max-cache-size",
            None,
            None,
            "Most bytes of mirrored files (suffixes K, M, G allowed; private files "
            "never count nor go): least recently used ones are evicted down to 90 %.",
            size,
        ],
        [
            "evict-unused-after",
            None,
            None,
            "Evict mirrored files not served for this long (suffixes s, m, h, d: 90d).",
            duration,
        ],
        [
            "hsts",
            None,
            None,
            "Answers on ssl: listeners carry Strict-Transport-Security with this "
            "max-age (suffixes s, m, h, d: 365d); browsers then use HTTPS only.",
            duration,
        ],
        [
            "access-log",
            None,
            None,
            "Write the access log (combined log format) to this file, batched, "
            "instead of one line per request in twistd's log.",
        ],
        [
            "config",
            None,
            None,
            "TOML file of options, under the names of the flags (docs/configuration.rst); "
            "flags given here win. SIGHUP reads it again.",
        ],
        [
            "page-max-age",
            None,
            600,
            "Seconds clients may keep a /simple/ page or project list without "
            "asking again (Cache-Control: max-age; 0: ask every time).",
            int,
        ],
        [
            "json-log",
            None,
            None,
            "Also write every log event, and one access event per request, as "
            "one JSON object per line to this file.",
        ],
        [
            "upstream-proxy",
            None,
            None,
            "HTTP proxy for upstream traffic, http://[user:password@]host:port "
            "(CONNECT tunnels), instead of HTTPS_PROXY/HTTP_PROXY; NO_PROXY still "
            "applies; none: connect directly whatever the environment says.",
        ],
        [
            "upstream-ca",
            None,
            None,
            "PEM file of the certificate authorities trusted for upstream TLS, "
            "instead of the system's.",
        ],
        [
            "withdrawn",
            None,
            "hide",
            "hide: /local/ stops listing (and serving) cached files the upstream "
            "withdrew, as /simple/ does; keep: /local/ goes on offering them "
            "(kept on disk either way).",
            withdrawn_mode,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.argv: list[str] = []
        self["listen"] = []
        self["allow-from"] = []
        self["mirror-private"] = []
        self["block"] = []

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """Parse, keeping the arguments for ``--workers`` processes."""
        self.argv = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_allow_from(self, network: str) -> None:
        """Serve only clients from this network (CIDR or address; repeatable)."""
        try:
            self["allow-from"].append(parse_cidr(network))
        except ValueError as e:
            raise usage.UsageError(str(e)) from e

    def opt_mirror_private(self, project: str) -> None:
        """Let this private project merge in the upstream's files too (repeatable)."""
        try:
            self["mirror-private"].append(normalize(project))
        except BadRequest as e:
            raise usage.UsageError(e.message) from e

    def opt_block(self, entry: str) -> None:
        """Never serve this project, or its versions matching a specifier:
        evil-pkg, requests==2.99.0 (repeatable)."""
        try:
            parse_entry(entry)
        except ValueError as e:
            raise usage.UsageError(f"--block: {e}") from e
        self["block"].append(entry.strip())

    def opt_listen(self, endpoint: str) -> None:
        """A strports endpoint to listen on (repeatable; default tcp:8080:interface=127.0.0.1)."""
        self["listen"].append(endpoint)

    def postOptions(self) -> None:
        if self["config"] is not None:
            self["config"] = os.path.abspath(self["config"])
            given = given_on_command_line(self, self.argv)
            apply_config(self, self["config"], read_config(self["config"]), given)
        if not self["cache"]:
            raise usage.UsageError("--cache DIR is required")
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["index-url"] is None:
            self["index-url"] = pip_index_url()
        parts = urlsplit(self["index-url"])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise usage.UsageError(
                f"--index-url must be an http(s) URL, not {self['index-url']!r}"
            )
        if self["timeout"] <= 0:
            raise usage.UsageError("--timeout must be positive")
        self.check_upstreams()
        self.check_storage()
        if self["auth-file"] is not None and not os.path.isfile(self["auth-file"]):
            raise usage.UsageError(f"--auth-file {self['auth-file']!r} is not a file")
        if not 1 <= self["workers"] <= MAX_WORKERS:
            raise usage.UsageError(f"--workers must be from 1 to {MAX_WORKERS}")
        for name in (
            "bulk-concurrency",
            "bulk-jobs-per-client",
            "bulk-max-lines",
            "bulk-max-projects",
            "bulk-max-rounds",
        ):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        self.check_prefetch()
        if self["bulk-auth"] and self["auth-file"] is None:
            raise usage.UsageError("--bulk-auth yes needs --auth-file")
        if self["metrics-auth"] and self["auth-file"] is None:
            raise usage.UsageError("--metrics-auth yes needs --auth-file")
        if self["read-auth"] and self["auth-file"] is None:
            raise usage.UsageError("--read-auth needs --auth-file")
        for name in ("access-log", "json-log"):
            if self[name] is not None:
                self[name] = os.path.abspath(self[name])
                folder = os.path.dirname(self[name])
                if os.path.isdir(self[name]) or not os.access(folder, os.W_OK):
                    raise usage.UsageError(
                        f"--{name} {self[name]!r} is not a file that can be "
                        "written in an existing folder"
                    )
        if self["page-max-age"] < 0:
            raise usage.UsageError("--page-max-age must not be negative")
        try:
            proxy_settings(self["upstream-proxy"], os.environ)
        except ValueError as e:
            raise usage.UsageError(f"--upstream-proxy or *_PROXY: {e}") from e
        if self["upstream-ca"] is not None:
            self["upstream-ca"] = os.path.abspath(self["upstream-ca"])
            try:
                read_ca_bundle(self["upstream-ca"])
            except (OSError, ValueError) as e:
                raise usage.UsageError(f"--upstream-ca: {e}") from e
        if self["auth-failures"] < 1:
            raise usage.UsageError("--auth-failures must be at least 1")
        if self["auth-failure-window"] <= 0:
            raise usage.UsageError("--auth-failure-window must be positive")
