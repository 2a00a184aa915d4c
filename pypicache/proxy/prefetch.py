# -*- test-case-name: tests.test_prefetch -*-
"""Prefetch: while a client reads a cold page, fetch what it will ask for next.

A resolver that has read a project's page asks next for the ``.metadata`` of
the file it picks, then for the pages of that file's dependencies, and so on
down the tree, one round trip after another. When a page had to be fetched
from upstream for a client, :class:`Prefetcher` walks that tree ahead of the
client: it picks the file a resolver would (the newest wheel, not yanked, that
fits this interpreter's tags and Python, within the specifier that led there),
fetches its ``.metadata`` through the mirror (kept, so the client's own
request finds it on disk or joins the fetch under way), reads its
``Requires-Dist`` (markers evaluated for this interpreter, no extras), and
fetches the pages of those dependencies, ``depth`` levels down.

Bounded: at most ``concurrency`` upstream requests at a time across all walks,
at most ``requests`` per walk, ``depth`` levels; a project walked recently is
not walked again. Never a private project, never anything for a client: the
walk starts after the client's page is answered and its failures are only
logged (at debug level: the client's own request will say what is wrong).
Never at the clients' expense: a walk is not made when the reactor is behind
(its start, scheduled for the next turn, comes more than ``max_lag`` late),
as it is when clients keep it busy; their requests go first.
"""

import email
import platform
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import attrs
from packaging.tags import Tag, parse_tag
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pypicache.concurrency import RunBlocking
from pypicache.errors import NotFound
from pypicache.index.model import DistFile, ProjectPage
from pypicache.proxy.mirror import Mirror
from pypicache.proxy.views import Views
from pypicache.proxy.walkloads import load_once, loaded, tag_ranks

if TYPE_CHECKING:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

log = Logger()

#: Default levels of dependencies walked below a cold page.
DEFAULT_DEPTH = 3
#: Default upstream requests (pages and ``.metadata``) per walk.
DEFAULT_REQUESTS = 64
#: Upstream requests of all walks at a time.
DEFAULT_CONCURRENCY = 8
#: Default largest wheel downloaded ahead of a client (0: none).
DEFAULT_MAX_FILE = 0
#: Seconds late a walk may start (the reactor busy with clients' requests
#: for longer: the walk is not made).
MAX_LAG = 0.05


def _this_python() -> Version:
    return Version(platform.python_version())


#: Pages of at most this many files are picked from on the reactor (a
#: thread trip costs more); larger ones in a thread (3,000 files: tens of ms).
PICK_INLINE = 200


def _wheel_rank(filename: str, ranks: dict[Tag, int]) -> int | None:
    """The best rank of a wheel's tags here, or ``None`` if none fits."""
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return None
    try:
        tags = parse_tag("-".join(parts[-3:]))
    except ValueError:
        return None
    fitting = [ranks[t] for t in tags if t in ranks]
    return min(fitting) if fitting else None


def pick(
    page: ProjectPage,
    specifier: "SpecifierSet | None",
    ranks: dict[Tag, int],
    python: Version,
) -> DistFile | None:
    """The file whose ``.metadata`` a resolver reads first on ``page``.

    The newest final version within ``specifier`` (and ``Requires-Python``)
    with a file that is not yanked; its best-fitting wheel, or its sdist if
    the index offers that sdist's ``.metadata``. ``None`` when the newest
    version has neither (a resolver would build it: nothing to prefetch).
    """
    # Files grouped by version text: each version is parsed and checked once.
    groups: dict[str, list[DistFile]] = {}
    for f in page.files:
        if f.yanked or f.url is None:
            continue
        name = f.filename
        if name.endswith(".whl"):
            text = name.split("-", 2)[1] if name.count("-") >= 4 else ""
        elif name.endswith(".tar.gz"):
            text = name[: -len(".tar.gz")].rpartition("-")[2]
        else:
            continue
        group = groups.get(text)
        if group is None:
            groups[text] = [f]
        else:
            group.append(f)
    # Texts that are one version ("1.0", "1.0.0") share a group.
    by_version: dict[Version, list[DistFile]] = {}
    for text, files in groups.items():
        try:
            by_version.setdefault(Version(text), []).extend(files)
        except InvalidVersion:
            continue
    # Newest first, each checked only until one is picked (``contains`` is
    # costly, and a 3,000-file page is read on the reactor).
    for version in sorted(by_version, reverse=True):
        if version.is_prerelease:
            continue
        if specifier is not None and not specifier.contains(version):
            continue
        files = by_version[version]
        best: tuple[int, DistFile] | None = None
        for f in files:
            if not _python_fits(f, python):
                continue
            if f.filename.endswith(".whl"):
                rank = _wheel_rank(f.filename, ranks)
                if rank is not None and (best is None or rank < best[0]):
                    best = (rank, f)
            elif f.core_metadata and best is None:
                best = (len(ranks), f)
        if best is not None:
            return best[1]
        if any(
            not f.filename.endswith(".whl") and _python_fits(f, python) for f in files
        ):
            return None  # a resolver would take this version's sdist, and build it
    return None


def _python_fits(f: DistFile, python: Version) -> bool:
    if not f.requires_python:
        return True
    from packaging.specifiers import InvalidSpecifier, SpecifierSet  # not at start-up

    try:
        return SpecifierSet(f.requires_python).contains(python, prereleases=True)
    except InvalidSpecifier:
        return True


def dependencies(metadata: bytes) -> list["Requirement"]:
    """The ``Requires-Dist`` of core metadata that apply here without extras
    (packaging's requirements and markers load with the first walk, not at
    start-up)."""
    from packaging.requirements import InvalidRequirement, Requirement

    message = email.message_from_bytes(metadata)
    wanted = []
    for value in message.get_all("Requires-Dist") or ():
        try:
            requirement = Requirement(str(value))
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(requirement)
        except (InvalidRequirement, ValueError, KeyError):
            continue
    return wanted


@attrs.define
class _Walk:
    """One walk's budget and the projects it has planned."""

    left: int
    planned: set[str] = attrs.field(factory=set)

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@attrs.define
class Prefetcher:
    """Walks the dependency tree below cold pages ahead of the client.

    :ivar _views: which projects are private, which files stored.
    :ivar depth: levels of dependencies walked below the page.
    :ivar requests: upstream requests per walk (pages and ``.metadata``).
    :ivar concurrency: upstream requests at a time, all walks together.
    :ivar max_file: the picked wheel itself is downloaded too (one request of
        the walk's) when the page says it is no larger than this (0: never).
    :ivar max_walks: walks under way at most (a cold page past them starts none).
    :ivar remember: how many recently walked projects are remembered (and
        not walked again for ``ttl`` seconds).
    :ivar max_lag: seconds late a walk may start after its page was answered;
        later, the reactor is behind with clients' requests: no walk.
    :ivar shed: walks not made for that.
    """

    _mirror: Mirror
    _views: Views
    _clock: IReactorTime
    depth: int = DEFAULT_DEPTH
    requests: int = DEFAULT_REQUESTS
    concurrency: int = DEFAULT_CONCURRENCY
    max_file: int = DEFAULT_MAX_FILE
    max_walks: int = 32
    ttl: float = 600.0
    remember: int = 4096
    max_lag: float = MAX_LAG
    shed: int = 0
    _python: Version = attrs.field(factory=_this_python)
    _recent: "OrderedDict[str, float]" = attrs.field(factory=OrderedDict)
    #: Where a large page's pick is made (a thread: it parses every version),
    #: ``None``: on the reactor.
    run_blocking: "RunBlocking | None" = None
    _limit: DeferredSemaphore = attrs.field(init=False)
    #: Walks under way (for tests and shutdown: each fires when its walk ends).
    walks: list[Deferred[Any]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self._limit = DeferredSemaphore(self.concurrency)

    def page_fetched(self, project: str, page: ProjectPage) -> None:
        """A client's page came from upstream: walk below it, after this turn of
        the reactor (the client's answer goes first); not past ``max_walks``
        walks under way."""
        if len(self.walks) >= self.max_walks or self._walked_lately(project):
            return
        self._clock.callLater(
            0, self._start_unless_late, project, page, self._clock.seconds()
        )

    def _walked_lately(self, project: str) -> bool:
        """Whether ``project`` was planned by a walk in the last ``ttl``; if
        not, it is noted as planned now."""
        now = self._clock.seconds()
        when = self._recent.get(project)
        if when is not None and now - when < self.ttl:
            return True
        self._recent[project] = now
        self._recent.move_to_end(project)
        while len(self._recent) > self.remember:
            self._recent.popitem(last=False)
        return False

    def _start_unless_late(
        self, project: str, page: ProjectPage, scheduled: float
    ) -> None:
        """Walk below ``page`` unless this call comes more than ``max_lag``
        late (then ``project`` is not noted as walked)."""
        if self._clock.seconds() - scheduled > self.max_lag:
            self.shed += 1
            self._recent.pop(project, None)
            return
        self._start(project, page)

    def _start(self, project: str, page: ProjectPage) -> None:
        walk = _Walk(self.requests, {project})
        d = Deferred.fromCoroutine(self._expand(walk, project, page, None, 0))
        d.addErrback(
            lambda f: log.failure("Prefetch below {project}", f, project=project)
        )
        if d.called:  # nothing to fetch
            return
        self.walks.append(d)

        def done(result: Any) -> None:
            self.walks.remove(d)
            if walk.left <= 0:  # a log event per walk costs more than it tells
                log.debug(
                    "Prefetch below {project} used all its {used} upstream requests",
                    project=project,
                    used=self.requests,
                )

        d.addBoth(done)

    async def _expand(
        self,
        walk: _Walk,
        project: str,
        page: ProjectPage,
        specifier: "SpecifierSet | None",
        level: int,
    ) -> None:
        """Fetch the ``.metadata`` of the pick of ``page``; below ``depth``,
        walk its dependencies' pages, all at once (the page as the views'
        rules let it be served: nothing blocked or yanked locally is picked)."""
        if self._views is not None:
            try:
                page = self._views.rules.page("simple", project, page)
            except NotFound:
                return
        if self.run_blocking is not None and not loaded():  # not on the reactor
            await load_once(self.run_blocking)
        if self.run_blocking is not None and len(page.files) > PICK_INLINE:
            chosen = await self.run_blocking(
                pick, page, specifier, tag_ranks(), self._python
            )
        else:
            chosen = pick(page, specifier, tag_ranks(), self._python)
        if chosen is None or not walk.take():
            return
        try:
            metadata = await self._limit.run(
                self._mirror.metadata, project, chosen.filename, False
            )
        except Exception as e:
            log.debug(
                "Prefetch of {filename}.metadata failed: {reason}",
                filename=chosen.filename,
                reason=e,
            )
            return
        below = []
        if (
            chosen.filename.endswith(".whl")
            and chosen.size is not None
            and chosen.size <= self.max_file
            and walk.take()
        ):
            below.append(
                Deferred.fromCoroutine(self._download(project, chosen.filename))
            )
        if level >= self.depth:
            await DeferredList(below, consumeErrors=True)
            return
        for requirement in dependencies(metadata):
            name = canonicalize_name(requirement.name)
            if name in walk.planned:
                continue
            walk.planned.add(name)
            if await self._views.is_private(name):
                continue
            below.append(
                Deferred.fromCoroutine(
                    self._follow(walk, name, requirement.specifier, level + 1)
                )
            )
        if below:
            await DeferredList(below, consumeErrors=True)

    async def _download(self, project: str, filename: str) -> None:
        """Download and store a wheel (unless stored or under way)."""

        async def fetch() -> None:
            download = await self._mirror.download(project, filename)
            await download.stored_file()

        try:
            if (
                self._mirror.in_flight(filename) is None
                and await self._views.find(project, filename) is None
            ):
                await self._limit.run(fetch)
        except Exception as e:
            log.debug(
                "Prefetch of {filename} failed: {reason}", filename=filename, reason=e
            )

    async def _follow(
        self, walk: _Walk, project: str, specifier: "SpecifierSet", level: int
    ) -> None:
        """A dependency's page (fetched unless fresh), then below it; not if
        another walk went there lately, nor past the walk's budget (then a
        client's cold page of it may start a walk of its own)."""
        if self._walked_lately(project):
            return
        pages = self._mirror.pages
        cached = pages.fresh_now(project)
        if cached is None:
            if not walk.take():
                self._recent.pop(project, None)
                return
            try:
                cached = await self._limit.run(pages.get, project)
            except Exception as e:
                log.debug(
                    "Prefetch of the page of {project} failed: {reason}",
                    project=project,
                    reason=e,
                )
                return
        await self._expand(walk, project, cached.page, specifier or None, level)
