"""The network key of a client address: prefix, privacy, bad input."""

from core.networks import network_key, network_prefix


def test_the_prefix_is_the_slash_24_or_slash_48():
    assert network_prefix("203.0.113.77") == "203.0.113.0/24"
    assert network_prefix("2001:db8:abcd:12::1") == "2001:db8:abcd::/48"
    assert network_prefix("::ffff:203.0.113.9") == "203.0.113.0/24"  # an IPv4 client on a dual-stack socket


def test_addresses_that_do_not_parse_are_unknown():
    for junk in ("", "unknown", "203.0.113", "1.2.3.4, 5.6.7.8", "x" * 500, None):
        assert network_prefix(junk) == "" and network_key(junk) == ""


def test_the_key_is_a_keyed_hash_shared_by_one_network(settings):
    key = network_key("203.0.113.7")
    assert key == network_key("203.0.113.250") != network_key("203.0.114.7")
    assert len(key) == 16 and "203" not in key
    settings.SECRET_KEY = "another secret"
    assert network_key("203.0.113.7") != key  # not the bare hash of the prefix: needs the secret
