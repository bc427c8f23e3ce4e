"""The client's address: the socket's peer, or what trusted proxies say in X-Forwarded-For.

X-Forwarded-For is whatever the client wrote, plus one address per proxy it passed. Only the
entries our own proxies appended can be believed, so the header counts only when the peer is one of
``LOUPE_TRUSTED_PROXIES``, and then the address taken is the rightmost entry that is not a trusted
proxy (a client cannot push that one out by writing its own entries on the left).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` as networks; a malformed entry is a configuration error."""
    networks = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"LOUPE_TRUSTED_PROXIES: {entry!r} is not an address or network.") from None
    return tuple(networks)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(remote_addr: str, forwarded_for: str, trusted: tuple[Network, ...]) -> str:
    """The address a request came from (``remote_addr`` unless a trusted proxy forwarded it)."""
    if not trusted or not _trusted(remote_addr, trusted):
        return remote_addr
    for entry in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        if not _trusted(entry, trusted):
            try:
                return str(ipaddress.ip_address(entry))
            except ValueError:
                return remote_addr  # garbage where the client's address should be: judge by the proxy
    return remote_addr
