"""Digest authentication: the RFC examples, challenge parsing, nonce counting, stale and wrong credentials."""

from __future__ import annotations

from typing import Any

import pytest

from ivr.sip.digest import Challenge, DigestAuth, DigestError, digest_response, parse_challenge
from ivr.sip.message import Headers, SipRequest, SipResponse

# RFC 7616 section 3.9.1
RFC7616_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def params_of(value: str) -> dict[str, str]:
    scheme, _, rest = value.partition(" ")
    assert scheme == "Digest"
    out = {}
    for part in rest.split(", "):
        name, _, v = part.partition("=")
        out[name] = v.strip('"')
    return out


def test_rfc7616_sha256_and_md5_examples() -> None:
    common: dict[str, Any] = dict(username="Mufasa", realm="http-auth@example.org", password="Circle of Life",
                                  uri="/dir/index.html", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                                  method="GET", nc="00000001", cnonce=RFC7616_CNONCE, qop="auth")
    assert digest_response(algorithm="SHA-256", **common) == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )
    assert digest_response(algorithm="MD5", **common) == "8ca523f5e9506fed4657c9700eebdbec"


def test_rfc2617_example() -> None:
    assert digest_response(
        algorithm="MD5", username="Mufasa", realm="testrealm@host.com", password="Circle Of Life", method="GET",
        uri="/dir/index.html", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", nc="00000001", cnonce="0a4f113b",
        qop="auth",
    ) == "6629fae49393a05397450978507c4ef1"


def test_rfc2069_without_qop_and_sess_variants() -> None:
    plain = digest_response(algorithm="MD5", username="u", realm="r", password="p", method="REGISTER",
                            uri="sip:x", nonce="n")
    assert len(plain) == 32
    sess = digest_response(algorithm="MD5-sess", username="u", realm="r", password="p", method="REGISTER",
                           uri="sip:x", nonce="n", nc="00000001", cnonce="c", qop="auth")
    not_sess = digest_response(algorithm="MD5", username="u", realm="r", password="p", method="REGISTER",
                               uri="sip:x", nonce="n", nc="00000001", cnonce="c", qop="auth")
    assert sess != not_sess
    sha_sess = digest_response(algorithm="SHA-256-sess", username="u", realm="r", password="p", method="INVITE",
                               uri="sip:x", nonce="n", nc="00000001", cnonce="c", qop="auth-int", body=b"v=0")
    assert len(sha_sess) == 64


def test_parse_challenge() -> None:
    c = parse_challenge(RFC7616_CHALLENGE)
    assert c == Challenge(realm="http-auth@example.org", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                          algorithm="SHA-256", qop=("auth", "auth-int"),
                          opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
    stale = parse_challenge('digest realm="a\\"b",nonce=abc, stale=TRUE, algorithm=MD5-sess', "Proxy-Authenticate")
    assert (stale.realm, stale.nonce, stale.stale, stale.algorithm) == ('a"b', "abc", True, "MD5-sess")
    assert stale.answer_header == "Proxy-Authorization"
    with pytest.raises(DigestError):
        parse_challenge('Basic realm="x"')
    with pytest.raises(DigestError):
        parse_challenge('Digest realm="x"')
    with pytest.raises(DigestError):
        parse_challenge('Digest realm="x", nonce="unterminated')


def register_request(body: bytes = b"") -> SipRequest:
    return SipRequest("REGISTER", "sip:example.com", Headers([("CSeq", "1 REGISTER")]), body)


def challenge(status: int, *values: str) -> SipResponse:
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    return SipResponse(status, "Unauthorized", Headers([(name, v) for v in values]))


def test_authorize_rfc7616_values_and_nc_counting() -> None:
    auth = DigestAuth("Mufasa", "Circle of Life", cnonce=lambda: RFC7616_CNONCE)
    auth.begin()
    assert auth.on_challenge(challenge(401, RFC7616_CHALLENGE)) is None
    req = SipRequest("GET", "/dir/index.html")
    auth.authorize(req)
    p = params_of(req.headers.get("Authorization") or "")
    assert p["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert (p["qop"], p["nc"], p["algorithm"], p["opaque"]) == (
        "auth", "00000001", "SHA-256", "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
    auth.authorize(req)  # the same nonce again (a refresh): nc counts up, one header only
    assert req.headers.get_all("Authorization")[0].count("nc=00000002") == 1
    assert len(req.headers.get_all("Authorization")) == 1


def test_auth_int_when_only_auth_int_offered() -> None:
    auth = DigestAuth("u", "p", cnonce=lambda: "c")
    auth.on_challenge(challenge(401, 'Digest realm="r", nonce="n", qop="auth-int"'))
    req = register_request(b"body")
    auth.authorize(req)
    p = params_of(req.headers.get("Authorization") or "")
    assert p["qop"] == "auth-int"
    assert p["response"] == digest_response(algorithm="MD5", username="u", realm="r", password="p",
                                            method="REGISTER", uri="sip:example.com", nonce="n",
                                            nc="00000001", cnonce="c", qop="auth-int", body=b"body")


def test_topmost_supported_challenge_wins_and_407_uses_proxy_authorization() -> None:
    auth = DigestAuth("u", "p")
    resp = challenge(407, 'Digest realm="r", nonce="n1", algorithm=SHA-256, qop="auth"',
                     'Digest realm="r", nonce="n2", algorithm=MD5, qop="auth"')
    assert auth.on_challenge(resp) is None
    req = register_request()
    auth.authorize(req)
    assert req.headers.get("Authorization") is None
    assert "algorithm=SHA-256" in (req.headers.get("Proxy-Authorization") or "")


def test_unsupported_challenge_is_reported() -> None:
    auth = DigestAuth("u", "p")
    failure = auth.on_challenge(challenge(401, 'Digest realm="r", nonce="n", algorithm=FOO'))
    assert failure is not None and failure.reason.startswith("unsupported challenge")
    failure = auth.on_challenge(challenge(401))
    assert failure is not None and failure.status == 401


def test_second_challenge_same_attempt_is_wrong_credentials() -> None:
    auth = DigestAuth("u", "wrong")
    auth.begin()
    assert auth.on_challenge(challenge(401, 'Digest realm="r", nonce="n1", qop="auth"')) is None
    failure = auth.on_challenge(challenge(401, 'Digest realm="r", nonce="n1", qop="auth"'))
    assert failure is not None and failure.reason == "wrong credentials"


def test_stale_retries_once_with_the_new_nonce() -> None:
    auth = DigestAuth("u", "p", cnonce=lambda: "c")
    auth.begin()
    assert auth.on_challenge(challenge(401, 'Digest realm="r", nonce="n1", qop="auth"')) is None
    assert auth.on_challenge(challenge(401, 'Digest realm="r", nonce="n2", qop="auth", stale=true')) is None
    req = register_request()
    auth.authorize(req)
    p = params_of(req.headers.get("Authorization") or "")
    assert (p["nonce"], p["nc"]) == ("n2", "00000001")
    failure = auth.on_challenge(challenge(401, 'Digest realm="r", nonce="n3", qop="auth", stale=true'))
    assert failure is not None and failure.reason == "wrong credentials"


def test_new_attempt_may_answer_a_fresh_challenge() -> None:
    """A refresh sent with cached credentials may meet a new nonce: that is not wrong credentials."""
    auth = DigestAuth("u", "p")
    auth.begin()
    assert auth.on_challenge(challenge(401, 'Digest realm="r", nonce="n1"')) is None
    auth.begin()
    assert auth.has_challenge
    assert auth.on_challenge(challenge(401, 'Digest realm="r", nonce="n2"')) is None
    req = register_request()
    auth.authorize(req)
    p = params_of(req.headers.get("Authorization") or "")
    assert p["nonce"] == "n2" and "nc" not in p and "cnonce" not in p
