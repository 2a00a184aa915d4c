# -*- test-case-name: tests.test_upstreams -*-
"""The options of the named upstreams: ``--upstream``, ``--route``, ``--merge``."""

import fnmatch

from twisted.python import usage

from pypicache.errors import BadRequest
from pypicache.index.names import normalize
from pypicache.proxy.upstreams import UpstreamSpec, check_name, check_url, parse_pair


class UpstreamOptions:
    """A mixin of :class:`~pypicache.tap.options.Options`: its three repeatable
    options, and their check once all are parsed."""

    def __init__(self) -> None:
        super().__init__()
        self["upstream"] = []
        self["route"] = []
        self["merge"] = []

    def opt_upstream(self, value: str) -> None:
        """A named upstream besides --index-url, NAME=URL (repeatable; credentials in the URL)."""
        try:
            name, url = parse_pair(value, "NAME=URL")
            self["upstream"].append(UpstreamSpec(check_name(name), check_url(url)))
        except ValueError as e:
            raise usage.UsageError(str(e)) from e

    def opt_route(self, value: str) -> None:
        """Look up projects matching GLOB only on upstream NAME, GLOB=NAME (repeatable)."""
        try:
            glob, name = parse_pair(value, "GLOB=NAME")
        except ValueError as e:
            raise usage.UsageError(str(e)) from e
        self["route"].append((glob.lower(), name))

    def opt_merge(self, project: str) -> None:
        """Look up this routed project on the default upstream too, after its own (repeatable)."""
        try:
            self["merge"].append(normalize(project))
        except BadRequest as e:
            raise usage.UsageError(e.message) from e

    def check_upstreams(self) -> None:
        """Every route names an upstream; every merged project is routed."""
        names = [spec.name for spec in self["upstream"]]
        if len(set(names)) != len(names):
            raise usage.UsageError(f"upstream: a name is given twice in {names}")
        for glob, name in self["route"]:
            if name not in names:
                raise usage.UsageError(
                    f"route: {glob!r} names no upstream {name!r} "
                    f"(the upstreams are: {', '.join(names) or 'none'})"
                )
        routes = [glob for glob, _ in self["route"]]
        for project in self["merge"]:
            if not any(fnmatch.fnmatchcase(project, glob) for glob in routes):
                raise usage.UsageError(
                    f"merge: {project!r} is not routed to a named upstream"
                )
