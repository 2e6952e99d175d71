"""A network namespace of a test's own, with `lo` as its only interface (root only).

A browser that gathers ICE candidates on every interface it sees (Firefox) sees only loopback
there, and so does everything started from inside: its peer traffic cannot leave loopback.

    with Namespace.made("connvo-ff") as ns, ns.entered():
        ...  # sockets made and processes started here live in the namespace
    ns.counters()  # bytes per interface, read before it is torn down
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@dataclass(frozen=True)
class Counters:
    """Bytes and packets an interface received and sent."""

    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int


@dataclass(frozen=True)
class Namespace:
    name: str

    @classmethod
    @contextlib.contextmanager
    def made(cls, name: str) -> Iterator[Namespace]:
        """A fresh namespace with `lo` up, deleted on the way out whatever happened (the
        processes still in it should be ended first: a namespace lives on while one is)."""
        if os.geteuid() != 0:
            raise PermissionError("network namespaces need root")
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "delete", name)  # left by a run that was killed
        _ip("netns", "add", name)
        try:
            _ip("-n", name, "link", "set", "lo", "up")
            yield cls(name)
        finally:
            _ip("netns", "delete", name)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """This thread (and the threads and processes it starts) in the namespace, back in its
        own on the way out; sockets stay in the namespace they were made in."""
        with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{self.name}") as ns:
            _setns(ns.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def counters(self) -> dict[str, Counters]:
        """Per interface, from /proc/net/dev as the namespace sees it."""
        counters = {}
        for line in self._read("/proc/net/dev").splitlines()[2:]:
            name, fields = line.split(":", 1)
            values = [int(v) for v in fields.split()]
            counters[name.strip()] = Counters(values[0], values[1], values[8], values[9])
        return counters

    def unroutable(self) -> int:
        """Packets its IPv4 and IPv6 stacks refused to send for want of a route: any try to
        reach beyond loopback (a DNS look-up, a call home), which the namespace stops."""
        ipv4 = [line.split() for line in self._read("/proc/net/snmp").splitlines()]
        names, values = [fields for fields in ipv4 if fields[0] == "Ip:"]
        ipv6 = dict(line.split() for line in self._read("/proc/net/snmp6").splitlines() if line)
        return int(dict(zip(names, values, strict=True))["OutNoRoutes"]) + int(
            ipv6["Ip6OutNoRoutes"]
        )

    def _read(self, path: str) -> str:
        command = ["ip", "netns", "exec", self.name, "cat", path]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout
