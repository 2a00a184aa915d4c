"""A bare HTTP client for the daemon under test: hand-built forms, exact requests.

Shared by the upload tests (``test_uploads.py``, ``test_uploads_auth.py``) and
the bulk tests (``test_bulk.py``). Requests go out through a bare Agent, so the
path is sent exactly as given, nothing is decoded and no redirect is followed.
"""

import base64
import io
import json
import uuid
from pathlib import Path

import treq
from twisted.internet import reactor
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from tests.daemon import RunningDaemon


def multipart(
    fields: list[tuple[str, str]],
    files: list[tuple[str, bytes, bytes]],
    *,
    boundary: str | None = None,
    file_type: str = "application/octet-stream",
) -> tuple[str, bytes]:
    """A ``multipart/form-data`` body built by hand (so filenames go out byte for byte).

    :param fields: ``(name, value)`` text fields.
    :param files: ``(field name, raw filename, content)`` file parts.
    :param boundary: the boundary; a fresh random one by default.
    :param file_type: the ``Content-Type`` of every file part.
    :returns: the content type and the body.
    """
    boundary = boundary or uuid.uuid4().hex
    body = io.BytesIO()
    for name, value in fields:
        body.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        )
        body.write(value.encode() + b"\r\n")
    for name, filename, content in files:
        body.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="'.encode()
        )
        body.write(filename + f'"\r\nContent-Type: {file_type}\r\n\r\n'.encode())
        body.write(content + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", body.getvalue()


def basic(user: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Answer:
    """What the daemon answered: code, reason phrase, headers, body."""

    def __init__(self, code: int, phrase: bytes, headers: Headers, body: bytes):
        self.code, self.phrase, self.headers, self.body = code, phrase, headers, body

    def header(self, name: str) -> str | None:
        """The first value of header ``name``, or None."""
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self):
        """The body, parsed as JSON."""
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.code} {self.phrase!r} {self.body[:200]!r}>"


async def send(
    daemon: RunningDaemon,
    method: str,
    path: bytes | str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    credentials: tuple[str, str] | None = None,
) -> Answer:
    """One request with a bare Agent: the path goes out exactly as given, no redirects.

    :param headers: header name -> value, sent as given.
    :param credentials: ``(user, password)`` for HTTP Basic auth.
    """
    if isinstance(path, str):
        path = path.encode()
    headers = dict(headers or {})
    if credentials is not None:
        headers["Authorization"] = basic(*credentials)
    producer = FileBodyProducer(io.BytesIO(body)) if body is not None else None
    raw = Headers({k.encode(): [v.encode()] for k, v in headers.items()})
    url = daemon.url.rstrip("/").encode() + path
    response = await Agent(reactor, pool=daemon.client_pool).request(
        method.encode(), url, raw, producer
    )
    return Answer(
        response.code, response.phrase, response.headers, await treq.content(response)
    )


async def put(
    daemon: RunningDaemon,
    archive: Path,
    project: str | None = None,
    filename: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    credentials: tuple[str, str] | None = None,
) -> Answer:
    """``PUT /packages/<project>/<filename>`` with the archive as the body.

    :param project: defaults to the filename up to its first ``-``.
    :param filename: defaults to the archive's name.
    """
    filename = filename or archive.name
    project = project or filename.split("-")[0]
    return await send(
        daemon,
        "PUT",
        f"/packages/{project}/{filename}",
        archive.read_bytes(),
        headers,
        credentials=credentials,
    )
