# -*- test-case-name: tests.test_workers -*-
"""Listening sockets shared by ``--workers`` processes.

The twistd process makes every ``--listen`` endpoint listen as usual (so a
privileged port is bound before privileges are dropped) but never reads from
the sockets: :class:`HoldingReactor` keeps the ports it makes. Each worker is
given their descriptors and adopts them (:func:`adopt`), with the protocol
factory the endpoint would have used: TLS for ``ssl:``, found by letting the
endpoint "listen" on a :class:`_FactoryCapture`.
"""

import os
import socket
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

#: What ``--workers`` can share.
SHAREABLE = "tcp:, ssl: and unix: listeners"


class HoldingReactor:
    """The reactor as the twistd process's listeners see it: the ports they make
    are kept in :attr:`ports` and never accept a connection."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.ports: list[IListeningPort] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _hold(self, port: Any) -> Any:
        port.stopReading()  # the workers accept, not this process
        self.ports.append(port)
        return port

    def listenTCP(self, *args: Any, **kwargs: Any) -> Any:
        return self._hold(self._reactor.listenTCP(*args, **kwargs))

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> Any:
        # Only the workers speak TLS; this process holds the TCP socket.
        return self.listenTCP(port, factory, backlog=backlog, interface=interface)

    def listenUNIX(self, *args: Any, **kwargs: Any) -> Any:
        return self._hold(self._reactor.listenUNIX(*args, **kwargs))


class _FactoryCapture:
    """A stand-in reactor that records the factory an endpoint would listen with."""

    factory: IProtocolFactory | None = None

    def listenTCP(self, port: int, factory: IProtocolFactory, **kwargs: Any) -> None:
        self.factory = factory

    def listenSSL(
        self, port: int, factory: IProtocolFactory, contextFactory: Any, **kwargs: Any
    ) -> None:
        self.factory = TLSMemoryBIOFactory(contextFactory, False, factory)

    def listenUNIX(
        self, address: str, factory: IProtocolFactory, **kwargs: Any
    ) -> None:
        self.factory = factory


def worker_factory(description: str, factory: IProtocolFactory) -> IProtocolFactory:
    """The factory a worker serves ``description``'s socket with.

    :raises usage.UsageError: the endpoint is not one ``--workers`` can share.
    """
    capture = _FactoryCapture()
    try:
        listening = serverFromString(capture, description).listen(factory)
        listening.addErrback(lambda _: None)  # no factory captured says it
    except Exception as e:  # an endpoint that wants more of the reactor
        raise usage.UsageError(
            f"--workers shares {SHAREABLE} only, not {description!r} ({e})"
        ) from e
    if capture.factory is None:
        raise usage.UsageError(
            f"--workers shares {SHAREABLE} only, not {description!r}"
        )
    return capture.factory


def adopt(reactor: Any, fd: int, factory: IProtocolFactory) -> IListeningPort:
    """Serve the listening socket ``fd`` (given by the twistd process) with ``factory``."""
    sock = socket.socket(fileno=fd)
    family = sock.family
    sock.detach()
    port = reactor.adoptStreamPort(fd, family, factory)
    os.close(fd)  # the port works on a copy of it
    _accept_one_at_a_time(port)
    return port


def _accept_one_at_a_time(port: Any) -> None:
    """Take one connection per wake-up, so that the workers share a burst.

    Every worker is woken by a new connection, and Twisted's port accepts as
    many as are queued (up to 100, growing): the first worker awake would
    take all 32 connections a load generator opens at once, and the others
    none. One at a time, the others take their turns.
    """
    read = port.doRead

    def doRead() -> None:
        port.numberAccepts = 1
        read()

    port.doRead = doRead
