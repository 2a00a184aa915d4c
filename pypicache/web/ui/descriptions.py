# -*- test-case-name: tests.test_ui_descriptions -*-
"""Long descriptions rendered once and kept, as the public index renders
them at upload time: in memory, and in a folder of the cache of their own
(``DIR/ui/descriptions/``), so that a new process (or another worker) shows
a release's page without rendering its README again.

A description is rendered by ``readme_renderer`` (which sanitizes what it
renders) and kept by a digest of what fixes the result: its content type and
its text. The same README in a thousand versions is rendered once; nothing
kept ever needs invalidating, since other text is another key. A kept file
also names the renderer that made it (:func:`renderer`: the versions of
``readme_renderer`` and of what it renders with): after an upgrade, which may
fix a sanitizer's bug, a description is rendered again and its file
replaced. Files are written atomically (temporary file, sync, rename); one
that cannot be read or is not whole is ignored and rendered again.

The folder is local even with the S3 store (``--cache`` is then its working
folder): rendering a README costs about what reading it back from a bucket
would, so each machine renders each description once. It is disposable:
deleting it costs renders, nothing else.

Everything here blocks (it renders, reads and writes files): call it in a
thread. It is thread-safe.
"""

import email.message
import functools
import hashlib
import json
import os
import threading
from collections import OrderedDict

from twisted.logger import Logger
from twisted.python.filepath import FilePath

from pypicache.storage.atomic import write_atomically

log = Logger()

#: Descriptions longer than this are shown as plain text (rendering is costly).
MAX_RENDERED = 1024 * 1024

#: Rendered descriptions kept in memory.
KEPT_IN_MEMORY = 64

#: The layout of a kept file (a change renders every description again).
FORMAT = 1

#: What renders descriptions: a new version of any of them renders again.
RENDERERS = ("readme-renderer", "docutils", "nh3", "cmarkgfm", "Pygments")

#: Where the descriptions are kept under the cache folder.
FOLDER = ("ui", "descriptions")


@functools.lru_cache(maxsize=1)
def renderer() -> str:
    """The renderer's stamp: this layout's :data:`FORMAT` and the versions of
    :data:`RENDERERS` (read from their installed metadata, without importing
    them: a process that only reads kept descriptions never imports docutils).

    ``importlib.metadata`` is imported here, at the first description: it and
    what it imports took a tenth of the daemon's own start-up imports."""
    import importlib.metadata

    versions = []
    for name in RENDERERS:
        try:
            versions.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name}=-")
    return f"{FORMAT};" + ";".join(versions)


def describe(text: str | None, content_type: str | None) -> str | None:
    """The long description as HTML, rendered as the public index renders it:
    reStructuredText by default, Markdown (GFM or CommonMark) or plain text as
    its content type says, plain text where rendering fails; always sanitized.
    """
    if not text:
        return None
    import readme_renderer.markdown
    import readme_renderer.rst
    import readme_renderer.txt

    header = email.message.Message()
    header["content-type"] = content_type or "text/x-rst"
    kind = header.get_content_type() if content_type else "text/x-rst"
    params = {k.lower(): v for k, v in header.get_params(failobj=[])[1:]}
    rendered = None
    if len(text) <= MAX_RENDERED:
        if kind == "text/markdown":
            rendered = readme_renderer.markdown.render(
                text, variant=params.get("variant", "GFM")
            )
        elif kind in ("text/x-rst", "text/rst"):
            rendered = readme_renderer.rst.render(text)
    if rendered is None:
        rendered = f"<pre>{readme_renderer.txt.render(text)}</pre>"
    return rendered


def description_key(text: str, content_type: str | None) -> str:
    """The digest a rendered description is kept by: of its content type and text."""
    digest = hashlib.sha256((content_type or "").encode("utf-8", "replace"))
    digest.update(b"\0")
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


class Descriptions:
    """Rendered descriptions, kept in memory (:data:`KEPT_IN_MEMORY`) and
    in ``folder`` (``None``: in memory only)."""

    folder: FilePath | None
    #: How many descriptions this object rendered (for the tests and the bench).
    renders: int
    _memory: "OrderedDict[str, str]"
    _lock: threading.Lock

    __slots__ = ("folder", "renders", "_memory", "_lock", "__weakref__")

    def __init__(
        self,
        folder: FilePath | None,
        renders: int = 0,
        memory: "OrderedDict[str, str] | None" = None,
        lock: "threading.Lock | None" = None,
    ) -> None:
        self.folder = folder
        self.renders = renders
        self._memory = OrderedDict() if memory is None else memory
        self._lock = threading.Lock() if lock is None else lock

    @classmethod
    def under(cls, root: FilePath | None) -> "Descriptions":
        """Kept under the cache folder ``root`` (``None``: in memory only)."""
        return cls(root.descendant(FOLDER) if root is not None else None)

    def html(self, text: str | None, content_type: str | None) -> str | None:
        """:func:`describe`, rendered once: from memory, else from its kept
        file, else rendered now and kept (blocking)."""
        if not text:
            return None
        key = description_key(text, content_type)
        with self._lock:
            html = self._memory.get(key)
            if html is not None:
                self._memory.move_to_end(key)
                return html
        html = self._read(key)
        if html is None:
            html = describe(text, content_type)
            assert html is not None
            with self._lock:
                self.renders += 1
            self._write(key, html)
        with self._lock:
            self._memory[key] = html
            while len(self._memory) > KEPT_IN_MEMORY:
                self._memory.popitem(last=False)
        return html

    def forget_memory(self) -> None:
        """Drop what is kept in memory (what a new process starts with)."""
        with self._lock:
            self._memory.clear()

    def path(self, key: str) -> FilePath | None:
        """The kept file of the description ``key`` (``None``: none kept)."""
        if self.folder is None:
            return None
        return self.folder.child(key[:2]).child(key + ".json")

    def _read(self, key: str) -> str | None:
        """The kept rendering of ``key``, if a whole one by this renderer is there."""
        path = self.path(key)
        if path is None:
            return None
        try:
            with open(path.path, "rb") as f:
                kept = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # partial, corrupt: rendered again
            log.warn("Ignoring kept description {path}: {e}", path=path.path, e=e)
            return None
        if (
            not isinstance(kept, dict)
            or kept.get("renderer") != renderer()
            or kept.get("key") != key
            or not isinstance(kept.get("html"), str)
        ):
            return None
        return kept["html"]

    def _write(self, key: str, html: str) -> None:
        """Keep ``html`` as the rendering of ``key`` (atomically; a failure
        is logged: the description is rendered again next time)."""
        path = self.path(key)
        if path is None:
            return
        data = json.dumps({"renderer": renderer(), "key": key, "html": html})
        try:
            os.makedirs(path.parent().path, exist_ok=True)
            write_atomically(path, data.encode())
        except Exception as e:  # a full or read-only disk costs renders only
            log.warn("Could not keep description {path}: {e}", path=path.path, e=e)
