# -*- test-case-name: tests.test_attestations -*-
"""PEP 740 provenance objects: the upstream's kept beside the files cached,
and served from the disk (so they stay available offline) or relayed.

An upstream file's record keeps the upstream's ``provenance`` URL. Once the
file is stored, its provenance object is fetched once, checked (see
:mod:`pypicache.index.provenance`) and written beside it; a client that asks
before then gets it relayed (and kept, if the file is stored by then).
"""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pypicache.concurrency import RunBlocking, SingleFlight
from pypicache.errors import NotFound, PypicacheError, UpstreamError
from pypicache.index.model import DistFile
from pypicache.index.provenance import MAX_PROVENANCE, check_provenance
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.upstream import mask_url
from pypicache.storage.interface import IStore
from pypicache.storage.records import StoredFile

log = Logger()


class Provenances:
    """The provenance objects of files: kept beside them, fetched from upstream."""

    #: Opens upstream URLs (``open_file``/``read_body``, as the mirror's client).
    _upstream: Any
    _store: IStore
    _mirror: Mirror
    _run_blocking: RunBlocking
    _flights: SingleFlight[bytes]

    __slots__ = (
        "_upstream",
        "_store",
        "_mirror",
        "_run_blocking",
        "_flights",
        "__weakref__",
    )

    def __init__(
        self,
        upstream: Any,
        store: IStore,
        mirror: Mirror,
        run_blocking: RunBlocking,
        flights: SingleFlight[bytes] | None = None,
    ) -> None:
        self._upstream = upstream
        self._store = store
        self._mirror = mirror
        self._run_blocking = run_blocking
        self._flights = SingleFlight() if flights is None else flights

    def stored(self, stored: StoredFile) -> None:
        """Told of a file just stored from upstream: keep its provenance, in
        the background (a failure is logged; the file stays)."""
        if stored.private or not stored.info.provenance:
            return
        Deferred.fromCoroutine(self._keep_quietly(stored))

    async def _keep_quietly(self, stored: StoredFile) -> None:
        try:
            await self._flights.run(
                stored.info.filename, lambda: self._fetch(stored.project, stored.info)
            )
        except PypicacheError as e:
            log.warn(
                "No provenance kept for {filename}: {reason}",
                filename=stored.info.filename,
                reason=e.message,
            )
        except Exception:
            log.failure(
                "Keeping the provenance of {filename} failed",
                filename=stored.info.filename,
            )

    async def get(
        self, project: str, filename: str, stored: StoredFile | None, private: bool
    ) -> bytes:
        """The provenance object of a file: kept beside it, else the upstream's.

        :param private: the project is private (the upstream is never asked).
        :raises NotFound: it has none.
        :raises UpstreamError: the upstream's cannot be fetched or is malformed.
        """
        if stored is not None:
            opened = await self._store.open_provenance(stored)
            if opened is not None:
                return opened.path.getContent()  # type: ignore[no-any-return]
        if private or (stored is not None and stored.private):
            raise NotFound(f"No provenance for {filename!r}")
        info = await self._mirror.describe(project, filename)
        if not info.provenance:
            raise NotFound(f"The upstream has no provenance for {filename!r}")
        return await self._flights.run(filename, lambda: self._fetch(project, info))

    async def _fetch(self, project: str, info: DistFile) -> bytes:
        """The upstream's provenance object of a file, checked, and kept if
        the file is stored."""
        assert info.provenance
        filename = info.filename
        response = await self._upstream.open_file(info.provenance)
        content: bytes = await self._upstream.read_body(response, MAX_PROVENANCE)
        stored = await self._store.find(project, filename)
        digest = (stored.info if stored is not None else info).hashes.get("sha256")
        try:
            await self._run_blocking(check_provenance, content, filename, digest)
        except PypicacheError as e:
            log.warn(
                "Malformed provenance for {filename} from {url}: {reason}",
                filename=filename,
                url=mask_url(info.provenance),
                reason=e.message,
            )
            raise UpstreamError(
                f"The upstream's provenance for {filename} is malformed: {e.message}"
            ) from e
        if stored is not None and not stored.private:
            await self._keep(stored, content)
        return content

    async def _keep(self, stored: StoredFile, content: bytes) -> None:
        # The record is written again too, so that pages (of /local/) list it.
        current = await self._store.find(stored.project, stored.info.filename)
        if current is None:
            return  # removed meanwhile
        await self._store.add_provenance(current, content)
        log.info("Kept the provenance of {filename}", filename=stored.info.filename)
