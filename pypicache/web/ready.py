# -*- test-case-name: tests.test_fastlane -*-
"""The answers the fast lane gives: the hot reads whose answer is ready now.

:meth:`ReadyAnswers.answer` takes a parsed request head and returns the
response's status, its header lines after ``Date`` and its body, exactly as
twisted.web would send them through :class:`~pypicache.web.guard.Guarded` and
:class:`~pypicache.web.fastpath.FastReads` (same headers, same order, same
body), or ``None`` whenever it is not sure: then the request goes the usual
way. Answered here:

- a project page ``/simple/<name>/`` or ``/local/<name>/`` (``name``
  normalized, no query) that needs no upstream request: ``200`` or ``304``;
- a stored archive ``/packages/<project>/<filename>`` (or
  ``/packages/<2>/<2>/<60>/<filename>``, the file-host layout) of at most
  :data:`~pypicache.web.sendfile.FIRST_CHUNK` bytes, without ``Range`` or
  ``If-Modified-Since``: ``200`` or ``304`` (larger ones go by ``sendfile``);
- a stored ``.metadata`` file: ``200``.

Never here: errors and redirects, reads needing credentials, refused clients,
a ``Host`` that is not a plain host name."""

import functools
import math
import os
import re
import stat
from collections import OrderedDict
from typing import Any, NamedTuple

from twisted.web.http import RESPONSES, datetimeToString
from twisted.web.http_headers import Headers

from pypicache.web.access import AccessPolicy
from pypicache.web.fastpath import routable_host
from pypicache.web.files import IMMUTABLE, etag_of
from pypicache.web.heads import RequestHead
from pypicache.web.routes.filehost import FileHostRoutes
from pypicache.web.routes.installer import InstallerRoutes
from pypicache.web.routing import PIECE, Body, validated
from pypicache.web.sendfile import FIRST_CHUNK

PAGE = re.compile(rb"/(simple|local)/([a-z0-9]+(?:-[a-z0-9]+)*)/")
FILE = re.compile(rb"/packages/([A-Za-z0-9._-]+)/([A-Za-z0-9._+-]+)")
_HOSTED = re.compile(
    rb"/packages/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{60})/([A-Za-z0-9._+-]+)"
)
_HOST = re.compile(rb"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")

#: Headers that change a file's answer and that only twisted.web answers.
_FILE_CONDITIONS = (b"range", b"if-modified-since", b"if-range")

OCTETS = b"application/octet-stream"


class Ready(NamedTuple):
    """A response ready to send.

    :ivar code: the status; :ivar headers: the header lines after ``Date``;
    :ivar body: what to send after them (nothing for ``HEAD``, ``304``);
    :ivar sent: the body's length as the access log counts it;
    :ivar file: a descriptor of an in-memory file holding the body (a
        large page's), to ``sendfile`` from, or ``-1``.
    """

    code: int
    headers: bytes
    body: tuple[bytes, ...]
    sent: int
    file: int = -1


#: :meth:`ReadyAnswers.answer`'s answer for a stored file too large to keep
#: in memory: twisted.web sends it at once from the disk (``sendfile``), a
#: read as cheap as the lane's, so it need not wait with the costly work of
#: a turn (:mod:`pypicache.web.turns`).
ON_DISK = Ready(0, b"", (), 0)


@functools.lru_cache(maxsize=64)
def header_line(name: bytes, value: bytes) -> bytes:
    """``Name: value\\r\\n`` with the name spelled as twisted.web writes it."""
    headers = Headers()
    headers.addRawHeader(name, value)
    ((spelled, _),) = headers.getAllRawHeaders()
    return spelled + b": " + value + b"\r\n"


@functools.lru_cache(maxsize=32)
def status_line(version: bytes, code: int) -> bytes:
    return b"%s %d %s\r\n" % (version, code, RESPONSES[code])


class ReadyAnswers:
    """Answers to the hot reads, from the installer routes' own methods.

    :param installer: the routes whose answers these are.
    :param policy: the access policy (reads needing credentials are never
        answered here; ``--allow-from`` is checked as the guard checks it).
    :param filehost: the routes of the file-host layout, if served.
    """

    cold: Any = None  #: cold installer reads to their route (``web/coldlane``)

    def __init__(
        self,
        installer: InstallerRoutes,
        policy: AccessPolicy,
        filehost: FileHostRoutes | None = None,
    ) -> None:
        self._installer = installer
        self._policy = policy
        self._filehost = filehost

    def answer(self, head: RequestHead) -> Ready | None:
        """The answer to ``head``, or ``None`` (or :data:`ON_DISK`) to leave
        it to twisted.web."""
        headers = head.headers
        host = headers.get(b"host")
        if (
            host is None
            or not plain_host(host)
            # Unusual requests (a body, Expect, Upgrade): left to twisted.web.
            or b"content-length" in headers
            or b"transfer-encoding" in headers
            or b"expect" in headers
            or b"upgrade" in headers
            or self._policy.reads_need_credentials
        ):
            return None
        target = head.uri
        try:
            page = PAGE.fullmatch(target)
            if page is not None:
                self._policy.check_address(head)
                body = self._installer.page_ready(
                    page.group(1).decode(),
                    page.group(2).decode(),
                    headers.get(b"accept"),
                    headers.get(b"accept-encoding"),
                )
                return None if body is None else _page_kept(head, body)
            file = FILE.fullmatch(target)
            if file is None:
                return self._hosted(head, target)
            if (  # _FILE_CONDITIONS, spelled out
                b"range" in headers
                or b"if-modified-since" in headers
                or b"if-range" in headers
            ):
                return None
            self._policy.check_address(head)
            project, filename = file.group(1).decode(), file.group(2).decode()
            if filename.endswith(".metadata"):
                content = self._installer.metadata_ready(project, filename)
                return None if content is None else _metadata(head, content)
            ready = self._installer.stored_ready(project, filename)
            if ready is None:
                return None
            stored, opened = ready
            return _archive(head, opened.path.path, etag_of(stored.info.hashes))
        except Exception:
            return None  # twisted.web answers it, with the error's status

    def _hosted(self, head: RequestHead, target: bytes) -> Ready | None:
        """:meth:`answer` for ``/packages/<2>/<2>/<60>/<filename>`` (else ``None``);
        the host and unusual headers are checked already."""
        hosted = _HOSTED.fullmatch(target) if self._filehost is not None else None
        if hosted is None or any(name in head.headers for name in _FILE_CONDITIONS):
            return None
        assert self._filehost is not None
        self._policy.check_address(head)
        first, second, rest, filename = (g.decode() for g in hosted.groups())
        ready = self._filehost.stored_ready(first, second, rest, filename)
        if ready is None:
            return None
        stored, opened = ready
        return _archive(head, opened.path.path, etag_of(stored.info.hashes))


_HOSTS: set[bytes] = set()  # what plain_host found good, at most _HOSTS_MAX
_HOSTS_MAX = 256


def plain_host(host: bytes) -> bool:
    """Whether ``host`` is a plain host name (and port) Klein would route."""
    if host in _HOSTS:
        return True
    if _HOST.fullmatch(host) is None or not routable_host(host):
        return False
    if len(_HOSTS) >= _HOSTS_MAX:
        _HOSTS.clear()
    _HOSTS.add(host)
    return True


#: Answers made by :func:`_page` lately: ``(body, method, If-None-Match)`` to
#: the body and its answer (a page's body is kept per version, so the same
#: object comes back until the page changes). At most :data:`_PAGES_MAX`
#: answers holding :data:`_PAGES_BYTES` bytes of bodies and of their
#: in-memory files (bodies may outlive their page's version in the render
#: cache until the next clearing).
_PAGES: dict[tuple[int, bytes, bytes | None], tuple[Body, Ready]] = {}
_PAGES_MAX = 256
_PAGES_BYTES = 32 * 1024**2
_pages_bytes = 0

#: A body larger than this is also kept in an in-memory file (``memfd``), so
#: that it goes to a plain TCP socket by ``sendfile``, not copied from Python.
FILE_BODY = PIECE


def _page_kept(head: RequestHead, body: Body) -> Ready:
    """:func:`_page`, made once per body, method and ``If-None-Match``."""
    key = (id(body), head.method, head.headers.get(b"if-none-match"))
    kept = _PAGES.get(key)
    if kept is not None and kept[0] is body:
        return kept[1]
    global _pages_bytes
    ready = _page(head, body)
    size = int(body.length)
    if ready.sent > FILE_BODY:
        ready = ready._replace(file=_body_file(ready.body))
        size += size if ready.file >= 0 else 0
    if (
        kept is not None
        or len(_PAGES) >= _PAGES_MAX
        or _pages_bytes + size > _PAGES_BYTES
    ):
        forget_pages()
    _PAGES[key] = (body, ready)
    _pages_bytes += size
    return ready


def forget_pages() -> None:
    """Drop the answers :func:`_page_kept` keeps, closing their files."""
    global _pages_bytes
    for _, ready in _PAGES.values():
        if ready.file >= 0:
            os.close(ready.file)
    _PAGES.clear()
    _pages_bytes = 0


def _body_file(pieces: tuple[bytes, ...]) -> int:
    """An in-memory file holding ``pieces``, or ``-1`` where there is none."""
    try:
        fd = os.memfd_create("pypicache-page", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        return -1
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]
    except OSError:
        os.close(fd)
        return -1
    return fd


def _page(head: RequestHead, body: Body) -> Ready:
    """As :func:`~pypicache.web.routing.send_body` answers."""
    lines = []
    if body.vary is not None:
        lines.append(header_line(b"vary", body.vary))
    held = validated(head.headers.get(b"if-none-match"), body)
    lines.append(b"ETag: " + (held or body.etag) + b"\r\n")
    if held is not None:
        for name, value in body.headers:
            if name == b"cache-control":  # a 304 carries it as a 200 would
                lines.append(header_line(name, value))
        return Ready(304, b"".join(lines), (), 0)
    for name, value in body.headers:
        lines.append(header_line(name, value))
    lines.append(b"Content-Length: " + body.length + b"\r\n")
    if head.method == b"HEAD":
        return Ready(200, b"".join(lines), (), 0)
    return Ready(200, b"".join(lines), body.pieces, int(body.length))


#: Copies of small stored archives the lane sent lately: path to the file's
#: identity when read (:func:`_identity`), its ``200`` header lines (from
#: ``Accept-Ranges`` on), its bytes and the answers made from them; at most
#: :data:`SMALL_FILES_BYTES` bytes of files in all, least recently sent first.
_FILES: "OrderedDict[str, tuple[tuple[int, ...], bytes, bytes, dict]]" = OrderedDict()
SMALL_FILES_BYTES = 16 * 1024**2
_files_bytes = 0


def _identity(status: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file is replaced or changed (a stored file is
    replaced by a rename: a new inode)."""
    return (
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )


def _archive(head: RequestHead, path: str, etag: bytes | None) -> Ready:
    """As :func:`~pypicache.web.files.serve_stored` and ``StoredArchive`` answer.

    The file's bytes come from a copy in memory while a ``stat`` shows the
    file unchanged, else from the file (and are kept, if small enough); the
    ``200`` answers made from a kept copy are kept with it, per method and
    ``ETag``, and so dropped with it when the file changes."""
    tags = head.headers.get(b"if-none-match")
    if etag is not None and tags:
        # Request.setETag's comparison: whitespace-separated tags, or "*".
        words = tags.split()
        if etag in words or b"*" in words:
            return Ready(304, _FILE_LINES + b"ETag: " + etag + b"\r\n", (), 0)
    kept = _small_file(path)
    if kept is None:
        return ON_DISK
    rest, data, answers = kept
    key = (head.method, etag)
    ready = answers.get(key)
    if ready is not None:
        return ready
    if etag is not None:
        rest += b"ETag: " + etag + b"\r\n"
    if head.method == b"HEAD":
        ready = Ready(200, _FILE_LINES + rest, (), 0)
    else:
        ready = Ready(200, _FILE_LINES + rest, (data,) if data else (), len(data))
    if len(answers) < _ANSWERS_PER_FILE:
        answers[key] = ready
    return ready


#: The header lines every stored archive's answer starts with.
_FILE_LINES = b"Cache-Control: " + IMMUTABLE + b"\r\nContent-Type: " + OCTETS + b"\r\n"

#: Answers kept per kept file (``GET`` and ``HEAD``, one ``ETag`` each as a rule).
_ANSWERS_PER_FILE = 4


def _small_file(path: str) -> tuple[bytes, bytes, dict] | None:
    """The header lines (``Accept-Ranges``, ``Content-Length``,
    ``Last-Modified``), the bytes of the regular file at ``path``, if it
    has at most :data:`~pypicache.web.sendfile.FIRST_CHUNK` bytes, and the
    answers made from them (:func:`_archive`); else ``None``."""
    global _files_bytes
    kept = _FILES.get(path)
    if kept is not None:
        try:
            status = os.stat(path)
        except OSError:
            return None
        if _identity(status) == kept[0]:
            _FILES.move_to_end(path)
            return kept[1], kept[2], kept[3]
        _FILES.pop(path)
        _files_bytes -= len(kept[2])
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        status = os.fstat(fd)
        size = status.st_size
        if not stat.S_ISREG(status.st_mode) or size > FIRST_CHUNK:
            return None
        data = os.pread(fd, size, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) != size:
        return None
    modified = datetimeToString(int(math.ceil(status.st_mtime)))
    rest = b"Accept-Ranges: bytes\r\nContent-Length: %d\r\nLast-Modified: %s\r\n" % (
        size,
        modified,
    )
    answers: dict = {}
    if size <= SMALL_FILES_BYTES:
        _FILES[path] = (_identity(status), rest, data, answers)
        _files_bytes += size
        while _files_bytes > SMALL_FILES_BYTES:
            _, (_, _, old, _) = _FILES.popitem(last=False)
            _files_bytes -= len(old)
    return rest, data, answers


def _metadata(head: RequestHead, content: bytes) -> Ready:
    """As a route's bytes are sent: no ``Content-Length``, so chunked in HTTP/1.1."""
    lines = b"Content-Type: " + OCTETS + b"\r\nCache-Control: " + IMMUTABLE + b"\r\n"
    if head.method == b"HEAD":
        return Ready(200, lines, (), 0)
    size = len(content)
    if head.clientproto != b"HTTP/1.1":
        return Ready(200, lines, (content,) if content else (), size)
    lines += b"Transfer-Encoding: chunked\r\n"
    chunk = b"%x\r\n" % size + content + b"\r\n" if content else b""
    return Ready(200, lines, (chunk + b"0\r\n\r\n",), size)
