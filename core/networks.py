"""The network a request came from, as a short keyed hash of its address's prefix.

Poisoning resistance (``feedback`` trust weights) needs to know that many new identities arrived from
one network, not who the visitor is. So only the prefix is kept: the /24 for IPv4 and the /48 for
IPv6 (one site: a home, an office, a cloud subnet), and even that is stored as an HMAC keyed by the
``SECRET_KEY``, truncated to 16 hex characters: two events from one network share a key, and the key
cannot be turned back into the prefix by enumerating the 2^24 IPv4 /24s without the secret.
An address that does not parse gives ``""`` (unknown), which the trust weights do not damp.

The address is ``REMOTE_ADDR`` as given; which proxy to trust for ``X-Forwarded-For`` is decided where
the request is read, not here.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from django.conf import settings

IPV4_PREFIX, IPV6_PREFIX = 24, 48
KEY_CHARS = 16


def network_prefix(address: str) -> str:
    """The address's network in CIDR form ("203.0.113.0/24", "2001:db8:1::/48"), or "" if it is not an address."""
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # "::ffff:203.0.113.9" is the IPv4 client behind a dual-stack socket
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def network_key(address: str) -> str:
    """What the search log stores for the client's network: a keyed hash of ``network_prefix`` ("" if unknown)."""
    prefix = network_prefix(address)
    if not prefix:
        return ""
    digest = hmac.new(settings.SECRET_KEY.encode(), prefix.encode(), hashlib.sha256).hexdigest()
    return digest[:KEY_CHARS]
