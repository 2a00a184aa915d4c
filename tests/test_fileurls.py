"""The file URLs of an upstream page resolve exactly as ``urljoin`` resolves
them; the URLs our pages link files at quote names exactly as ``quote`` does."""

from urllib.parse import quote, urldefrag, urljoin

import pytest

from pypicache.index.fileurls import FileUrls
from pypicache.web.routing import file_url

BASES = [
    "https://index.example/simple/thing/",
    "https://index.example/simple/thing",
    "https://index.example/simple/thing/?q=1#top",
    "http://user:pw@index.example:8080/a/b/c/",
    "http://127.0.0.1:1234/",
    "file:///srv/simple/thing/",
]

URLS = [
    "../../files/thing-1.0-py3-none-any.whl",
    "../../files/thing-1.0.tar.gz#sha256=abc",
    "../../files/thing-1.0.tar.gz?x=1",
    "../../../../../../files/thing-1.0.tar.gz",
    "thing-1.0.tar.gz",
    "./thing-1.0.tar.gz",
    "sub/./thing-1.0.tar.gz",
    "sub/../thing-1.0.tar.gz",
    "sub/..",
    "sub/.",
    "sub/",
    "/packages/ab/cd/thing-1.0.tar.gz",
    "//files.example/packages/thing%2B1.0.tar.gz",
    "https://files.example/packages/ab/cd/ef/thing-1.0-py3-none-any.whl",
    "HTTPS://files.example/packages/thing-1.0.whl",
    "http://files.example/packages/thing-1.0.whl",
    "https://files.example/p;x/thing-1.0.whl",
    "https://files.example/p/thing;x-1.0.whl",
    "https://files.example/p/a:b",
    "https://files.example/p/with space.whl",
    "https://files.example/p/t\tab.whl",
    " https://files.example/p/lead.whl",
    "ftp://files.example/p/thing-1.0.whl",
    "mailto:someone/thing.whl",
    "../../files/thing_1.0!+~%41.whl",
    "",
    "/",
]


@pytest.mark.parametrize("base", BASES)
def test_same_as_urljoin(base):
    """Every URL, plain or not, resolves to what ``urldefrag(urljoin(...))``
    gives, the second time (its folder remembered) as the first."""
    resolve = FileUrls(base)
    for _ in range(2):
        for url in URLS:
            assert resolve(url) == urldefrag(urljoin(base, url))[0], url


@pytest.mark.parametrize(
    "name",
    ["thing", "thing-1.0+local.whl", "a b", "é", "a/b", "~_.-", "", "a%20b", "a:b"],
)
def test_file_url_quotes_as_quote_does(name):
    """The URLs pages link files at quote the project and the filename as
    ``quote`` does, whether or not they need quoting."""
    assert file_url(name, name) == f"../../packages/{quote(name)}/{quote(name)}"
