"""The SSRF guard: webhooks go to public addresses only, unless allowed.

A target host is resolved once; only addresses that pass are connected to (so a
name cannot resolve one way for the check and another way for the connection), and
the peer of the connected socket is checked again. Loopback, private, link-local
(cloud metadata at 169.254.169.254 among them), shared, reserved and multicast
addresses are refused unless ``webhook_allowed_hosts`` names the host, a
``*.domain`` it belongs to, or a CIDR containing the address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from mediaq.errors import ConfigError, TargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
_METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))


@dataclass(frozen=True)
class AllowList:
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for item in (part.strip().lower() for part in text.split(",")):
            if not item:
                continue
            if item.startswith("*."):
                suffixes.append(item[1:])
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                if not _HOST_NAME.fullmatch(item):
                    raise ConfigError(f"webhook_allowed_hosts: {item!r} is neither a host "
                                      "name nor a CIDR") from None
                names.add(item.rstrip("."))
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.names or any(host.endswith(suffix) for suffix in self.suffixes)

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def why_forbidden(address: IPAddress) -> str | None:
    """Why connecting to ``address`` is refused by default; None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        # IPv4 wrapped in IPv6 (mapped, 6to4, Teredo) is judged as the IPv4 it reaches.
        embedded = address.ipv4_mapped or address.sixtofour or (
            address.teredo[1] if address.teredo else None)
        if embedded is not None:
            inner = why_forbidden(embedded)
            if inner is None or address.ipv4_mapped is not None:
                return inner
            return f"{inner} inside an IPv6 address"
    if address in _METADATA:
        return "a cloud metadata address"
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_private, "a private address"),
        (address.is_multicast, "a multicast address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for failed, reason in checks if failed), None)


def permitted(host: str, address: IPAddress, allow: AllowList) -> str | None:
    """None when ``host`` at ``address`` may be connected to, else the refusal reason."""
    reason = why_forbidden(address)
    if reason is None or allow.allows_name(host) or allow.allows_address(address):
        return None
    return (f"{host} resolves to {address}, {reason}; refused (allow it with "
            "MEDIAQ_WEBHOOK_ALLOWED_HOSTS)")


def resolve(host: str, port: int, allow: AllowList) -> list[IPAddress]:
    """The addresses of ``host`` that may be connected to, in resolver order.

    Raises :class:`TargetRefused` when there are none, OSError when the name does
    not resolve.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    reasons = [permitted(host, address, allow) for address in addresses]
    usable = [address for address, reason in zip(addresses, reasons, strict=True)
              if reason is None]
    if not usable:
        raise TargetRefused(next(reason for reason in reasons if reason))
    return usable


def check_peer(sock: socket.socket, host: str, allow: AllowList) -> None:
    """Refuse a connected socket whose peer is not permitted (the address actually used)."""
    peer = ipaddress.ip_address(sock.getpeername()[0])
    reason = permitted(host, peer, allow)
    if reason is not None:
        raise TargetRefused(reason)
