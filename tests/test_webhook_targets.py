"""Where a run's webhook may be posted: the rule applied when a run is created and before
each attempt, on literal addresses (no name service needed)."""

from __future__ import annotations

import pytest

from checkpoint.webhook_targets import RefusedTarget, check_url


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/", "http://[fd00:ec2::254]/",
                                 "http://100.100.100.200/", "http://[::ffff:169.254.169.254]/", "http://0.0.0.0:8080/"])
def test_metadata_link_local_and_unspecified_addresses_are_refused_even_where_private_ones_are_allowed(url):
    with pytest.raises(RefusedTarget):
        check_url(url, {})


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/hook", "http://10.1.2.3/hook", "http://[::1]/hook"])
def test_loopback_and_private_addresses_are_allowed_by_default_and_refused_when_switched_off(url):
    check_url(url, {})
    with pytest.raises(RefusedTarget, match="SIGNOFF_WEBHOOK_ALLOW_PRIVATE=0"):
        check_url(url, {"SIGNOFF_WEBHOOK_ALLOW_PRIVATE": "0"})


def test_a_public_address_is_allowed_with_private_ones_switched_off():
    check_url("https://93.184.215.14/hook", {"SIGNOFF_WEBHOOK_ALLOW_PRIVATE": "0"})
