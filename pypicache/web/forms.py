# -*- test-case-name: tests.test_uploads -*-
"""Request bodies: multipart forms parsed incrementally, files spooled to disk.

Twisted's own form parsing reads a whole multipart body into memory and drops
part filenames, so the site is built with ``parsePOSTFormSubmission=False`` and
bodies are parsed here, from the spooled ``request.content``, in a thread.
The multipart parser is imported by the first request with a form (not at
start-up: ``tests/test_startup.py``).
"""

from typing import IO, Any, Callable

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from pypicache.concurrency import RunBlocking
from pypicache.errors import BadRequest
from pypicache.private.received import CHUNK_SIZE, FilePart, UploadHasher
from pypicache.storage.atomic import TempFile
from pypicache.storage.interface import IStore
from pypicache.storage.records import INCOMING
from pypicache.web.routing import header

#: Largest non-file field we keep in memory.
MAX_FIELD_SIZE = 1024 * 1024
MAX_FIELDS = 1000


class Form:
    """The fields and files of a multipart form."""

    fields: dict[str, list[str]]
    files: dict[str, FilePart]

    __slots__ = ("fields", "files", "__weakref__")

    def __init__(
        self,
        fields: dict[str, list[str]] | None = None,
        files: dict[str, FilePart] | None = None,
    ) -> None:
        self.fields = {} if fields is None else fields
        self.files = {} if files is None else files

    def get(self, name: str) -> str | None:
        """The first value of a field, or ``None``."""
        values = self.fields.get(name)
        return values[0] if values else None

    def discard(self) -> None:
        """Delete the temporary files of every file part."""
        for part in self.files.values():
            part.temp.discard()


def _unquote_as_sent(value: str, filename: bool = False) -> str:
    """Unquote a Content-Disposition parameter, without multipart's old-IE fix-up."""
    from multipart import content_disposition_unquote

    return str(content_disposition_unquote(value))


def filename_as_sent(segment: Any) -> str | None:
    """A part's filename exactly as the client sent it (unquoted).

    ``multipart`` turns a Windows path (``C:\\dir\\name``, ``\\\\server\\name``)
    into its last component, which would let a filename full of backslashes
    through: uploads must refuse those, so the header is read again here.
    """
    from multipart import parse_options_header

    for name, value in segment.headerlist:
        if name.lower() == "content-disposition":
            return parse_options_header(value, unquote=_unquote_as_sent)[1].get(
                "filename"
            )
    return segment.filename


def field_text(segment: Any, raw: bytes) -> str:
    """A text field decoded with its part's charset (UTF-8 by default).

    :raises BadRequest: naming the field, for a charset that is unknown or not
        a text encoding, or bytes that do not decode in it.
    """
    charset = segment.charset or "utf-8"
    try:
        return raw.decode(charset)
    except LookupError as e:
        raise BadRequest(
            f"Form field {segment.name!r} has an unknown charset {charset[:40]!r}"
        ) from e
    except ValueError as e:  # UnicodeDecodeError, and codecs' own errors
        raise BadRequest(
            f"Form field {segment.name!r} is not valid {charset[:40]} text"
        ) from e


def boundary_of(content_type: str | None) -> str | None:
    """The boundary of a ``multipart/form-data`` content type, else ``None``."""
    if not content_type:
        return None
    from multipart import parse_options_header

    media, options = parse_options_header(content_type)
    if media.lower() != "multipart/form-data":
        return None
    return options.get("boundary") or None


def parse_form(
    content: IO[bytes], content_type: str, open_temp: Callable[[], TempFile]
) -> Form:
    """Parse a multipart body (blocking: run it in a thread).

    File parts (those with a filename) go to temporary files from ``open_temp``,
    hashed on the way; other fields are kept as text, up to ``MAX_FIELD_SIZE``.

    :raises BadRequest: for a body that is not a well-formed multipart form.
    """
    from multipart import MultipartError, PushMultipartParser

    boundary = boundary_of(content_type)
    if boundary is None:
        raise BadRequest("Expected a multipart/form-data body with a boundary")
    form = Form()
    content.seek(0)
    segment = None
    field: list[bytes] = []
    part: FilePart | None = None
    hasher = UploadHasher()
    try:
        with PushMultipartParser(boundary, max_segment_count=MAX_FIELDS) as parser:
            while not parser.closed:
                chunk = content.read(CHUNK_SIZE)
                for event in parser.parse(chunk):
                    if event is None:
                        assert segment is not None
                        if part is not None:
                            part.hashes = hasher.digests()
                            form.files.setdefault(part.name, part)
                            if form.files[part.name] is not part:
                                part.temp.discard()
                            part = None
                        else:
                            text = field_text(segment, b"".join(field))
                            form.fields.setdefault(segment.name or "", []).append(text)
                        segment = None
                    elif isinstance(event, bytes):
                        if part is not None:
                            part.temp.write(event)
                            hasher.update(event)
                            part.size += len(event)
                        else:
                            field.append(event)
                            if sum(map(len, field)) > MAX_FIELD_SIZE:
                                raise BadRequest(
                                    f"Form field {segment.name!r} is too large"
                                )
                    else:
                        segment = event
                        field = []
                        if event.filename is not None:
                            hasher = UploadHasher()
                            filename = filename_as_sent(event)
                            part = FilePart(
                                event.name or "", filename, open_temp(), 0, {}
                            )
                if not chunk:
                    break
    except MultipartError as e:
        if part is not None:
            part.temp.discard()
        form.discard()
        raise BadRequest(f"Malformed multipart body: {e}") from e
    except BaseException:
        if part is not None:
            part.temp.discard()
        form.discard()
        raise
    return form


async def read_form(
    request: IRequest, run_blocking: RunBlocking, store: IStore
) -> Form:
    """The multipart form of a request, parsed in a thread; files spooled to ``private/.incoming``.

    :raises BadRequest: if the body is not ``multipart/form-data`` or is malformed.
    """
    content_type = header(request, b"content-type")
    if boundary_of(content_type) is None:
        raise BadRequest("Expected a multipart/form-data body")
    assert content_type is not None
    parsing = run_blocking(
        parse_form,
        request.content,
        content_type,
        lambda: store.open_temp(None, INCOMING),
    )
    form: Form = await _unless_cancelled(parsing)
    return form


def _unless_cancelled(parsing: "Deferred[Form]") -> "Deferred[Form]":
    """The form being parsed; if the client goes away first, its files are discarded.

    Cancelling (Klein does, on a disconnect) must not drop the thread's result:
    its temporary files would stay in ``private/.incoming`` for ever.
    """
    cancelled: list[bool] = []
    result: Deferred[Form] = Deferred(lambda _: cancelled.append(True))

    def arrived(outcome: Any) -> None:
        if not cancelled:
            result.callback(outcome)
        elif isinstance(outcome, Form):
            outcome.discard()

    parsing.addBoth(arrived)
    return result
