"""Which `sip.accounts` entry answers an outbound call's 401/407 (ivr.sip.registrations.credentials_for)."""

from __future__ import annotations

from ivr.sip.register import RegistrationConfig
from ivr.sip.registrations import credentials_for

PBX = RegistrationConfig(aor="sip:2000@pbx.example.com", registrar="pbx.example.com:5060", username="2000",
                         password="secret")
TRUNK = RegistrationConfig(aor="sip:acme@trunk.example.net", registrar="192.0.2.7", username="acme",
                           password="trunkpass")


def test_the_account_registered_at_the_target_host_answers() -> None:
    assert credentials_for([PBX, TRUNK], ["pbx.example.com"]) == ("2000", "secret")
    assert credentials_for([PBX, TRUNK], ["192.0.2.7"]) == ("acme", "trunkpass")
    assert credentials_for([PBX, TRUNK], ["TRUNK.example.net"]) == ("acme", "trunkpass")  # the AOR's domain


def test_a_pbx_reached_by_address_finds_the_account_configured_by_name() -> None:
    resolved = {PBX.aor: [("10.0.0.5", 5060)]}
    assert credentials_for([PBX, TRUNK], ["10.0.0.5"], resolved) == ("2000", "secret")


def test_no_matching_account_no_credentials() -> None:
    assert credentials_for([PBX, TRUNK], ["198.51.100.1", "other.example"]) is None
    assert credentials_for([], ["pbx.example.com"]) is None
