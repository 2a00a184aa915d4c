# -*- test-case-name: tests.test_fileurls -*-
"""The absolute URLs of the files of one upstream page, resolved fast.

A page of thousands of files names them in a few folders (``../../files/``,
``https://host/packages/ab/cd/.../``): :class:`FileUrls` resolves each
folder once with :func:`~urllib.parse.urljoin` and appends the file's name,
which is what ``urljoin`` gives for a name of plain characters (no ``.`` or
``..`` segment, no query, fragment or parameters), at a tenth of its cost.
Any other URL goes through ``urljoin`` itself.
"""

import re
from urllib.parse import urldefrag, urljoin

#: A last path segment that ``urljoin`` keeps as it is: no ``;`` (parameters),
#: ``?``, ``#``, ``:`` or whitespace.
_PLAIN = re.compile(r"[A-Za-z0-9._~%+!-]+")


class FileUrls:
    """``urldefrag(urljoin(page_url, url))[0]`` for the URLs of one page."""

    def __init__(self, page_url: str) -> None:
        self._page_url = page_url
        self._folders: dict[str, str | None] = {}

    def __call__(self, url: str) -> str:
        cut = url.rfind("/") + 1
        if cut and "#" not in url and "?" not in url:
            name = url[cut:]
            if name != "." and name != ".." and _PLAIN.fullmatch(name):
                folder = url[:cut]
                base = self._folders.get(folder, "")
                if base == "":
                    base = self._folder(folder)
                if base is not None:
                    return base + name
        return urldefrag(urljoin(self._page_url, url))[0]

    def _folder(self, folder: str) -> str | None:
        """The absolute URL of ``folder`` (a URL ending with ``/``), or
        ``None`` if names cannot just be appended to it."""
        base: str | None = urldefrag(urljoin(self._page_url, folder))[0]
        if base is None or not base.endswith("/"):
            base = None
        if len(self._folders) < 1024:
            self._folders[folder] = base
        return base
