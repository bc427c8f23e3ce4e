"""The client's address: X-Forwarded-For believed only from trusted proxies, and only their entries."""

import pytest

from core.client_ip import client_ip, parse_networks

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1"])


def test_without_trusted_proxies_the_header_is_ignored():
    assert client_ip("198.51.100.1", "203.0.113.9", ()) == "198.51.100.1"


def test_an_untrusted_peer_cannot_name_another_address():
    assert client_ip("198.51.100.1", "203.0.113.9", PROXIES) == "198.51.100.1"


def test_the_rightmost_untrusted_entry_is_the_client():
    # The client wrote "1.2.3.4" itself; nginx appended the address it saw; an inner proxy appended its own.
    assert client_ip("10.0.0.2", "1.2.3.4, 203.0.113.9, 10.0.0.5", PROXIES) == "203.0.113.9"


def test_garbage_or_only_proxies_fall_back_to_the_peer():
    assert client_ip("10.0.0.2", "not-an-address", PROXIES) == "10.0.0.2"
    assert client_ip("10.0.0.2", "10.0.0.7, 127.0.0.1", PROXIES) == "10.0.0.2"
    assert client_ip("10.0.0.2", "", PROXIES) == "10.0.0.2"


def test_a_malformed_proxy_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="LOUPE_TRUSTED_PROXIES: 'nginx'"):
        parse_networks(["nginx"])
