"""UserSig generation and verification (spec section 9), against the official library as oracle."""

from __future__ import annotations

import base64
import json
import zlib
from unittest import mock

import TLSSigAPIv2
from hypothesis import given
from hypothesis import strategies as st

from batchedit.im import usersig
from batchedit.im.usersig import SigVerdict

DEMO_KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
T0 = 1700000000


def _document(sig: str) -> dict[str, object]:
    raw = base64.b64decode(sig.replace("*", "+").replace("-", "/").replace("_", "="))
    document: dict[str, object] = json.loads(zlib.decompress(raw))
    return document


def test_matches_the_specs_derived_vector() -> None:
    """With a pinned clock our sig decodes to the spec's fields and TLS.sig."""
    sig = usersig.generate(1400000000, DEMO_KEY, "xiaojun", 15552000, now=T0)
    assert _document(sig) == {
        "TLS.ver": "2.0",
        "TLS.identifier": "xiaojun",
        "TLS.sdkappid": 1400000000,
        "TLS.expire": 15552000,
        "TLS.time": T0,
        "TLS.sig": "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4=",
    }


def test_matches_the_specs_second_vector() -> None:
    """The second derived vector (administrator, 86400 s, test-secret-key)."""
    sig = usersig.generate(1400000000, "test-secret-key", "administrator", 86400, now=T0)
    assert _document(sig)["TLS.sig"] == "XWlzAVufCDf/xBqHPaqKD4IaA/yjced5hDMnZsloN7I="


def test_the_specs_literal_usersig_verifies() -> None:
    """The spec's whole UserSig string verifies with our code at its own time."""
    literal = (
        "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1N"
        "jRDiJZm5YFFzNPXFmekgG3zKHM1T9D3LzdODi-OKs8vCqpxcAvydnV2SSv2cy03cPcpDnA2SMgu0nUxslWoBHdYzUg__"
    )
    assert usersig.verify(literal, 1400000000, DEMO_KEY, "xiaojun", now=T0) is SigVerdict.OK


def test_oracle_sig_verifies_with_ours() -> None:
    """A sig made by the official tls-sig-api-v2 package passes our verification."""
    with mock.patch.object(TLSSigAPIv2.time, "time", return_value=T0):
        oracle = TLSSigAPIv2.TLSSigAPIv2(1400000000, DEMO_KEY).gen_sig("xiaojun", 86400)
    assert usersig.verify(oracle, 1400000000, DEMO_KEY, "xiaojun", now=T0 + 10) is SigVerdict.OK


def test_ours_equals_the_oracles_document() -> None:
    """For the same clock, our document equals the official package's, field for field."""
    with mock.patch.object(TLSSigAPIv2.time, "time", return_value=T0):
        oracle = TLSSigAPIv2.TLSSigAPIv2(1400000000, DEMO_KEY).gen_sig("someone", 3600)
    ours = usersig.generate(1400000000, DEMO_KEY, "someone", 3600, now=T0)
    assert _document(ours) == _document(oracle)


SIG = usersig.generate(1400000000, "k", "admin", 100, now=T0)


def test_every_verdict() -> None:
    """Each way a sig can be wrong gives its own verdict, with the server's code."""

    def check(
        sig: str,
        sdkappid: int = 1400000000,
        key: str = "k",
        identifier: str = "admin",
        now: int = T0,
    ) -> SigVerdict:
        return usersig.verify(sig, sdkappid, key, identifier, now=now)

    assert check(SIG) is SigVerdict.OK
    assert check(SIG, now=T0 + 100) is SigVerdict.OK
    assert check(SIG, now=T0 + 101) is SigVerdict.EXPIRED
    assert check(SIG, key="other") is SigVerdict.BAD_SIGNATURE
    assert check(SIG, identifier="someone") is SigVerdict.IDENTIFIER_MISMATCH
    assert check(SIG, sdkappid=1400000001) is SigVerdict.SDKAPPID_MISMATCH
    assert check("") is SigVerdict.EMPTY
    assert check(SIG[: len(SIG) // 2]) is SigVerdict.MALFORMED
    assert check("not base64 !!") is SigVerdict.MALFORMED
    not_zlib = base64.b64encode(b"plain bytes").decode().translate(str.maketrans("+/=", "*-_"))
    assert check(not_zlib) is SigVerdict.MALFORMED
    not_json = base64.b64encode(zlib.compress(b"{nope")).decode()
    assert check(not_json.translate(str.maketrans("+/=", "*-_"))) is SigVerdict.MALFORMED
    a_list = base64.b64encode(zlib.compress(b"[1, 2]")).decode()
    assert check(a_list.translate(str.maketrans("+/=", "*-_"))) is SigVerdict.MALFORMED
    assert [v.value for v in SigVerdict] == [0, 70002, 70001, 70003, 70009, 70013, 70014]


@given(st.text(max_size=300))
def test_garbage_never_raises(garbage: str) -> None:
    """Random strings get a verdict, never an exception."""
    verdict = usersig.verify(garbage, 1400000000, "k", "admin", now=T0)
    assert verdict is not SigVerdict.OK


@given(
    st.text(min_size=1, max_size=32),
    st.integers(min_value=1, max_value=2**32 - 1),
    st.integers(min_value=1, max_value=10**9),
    st.text(min_size=1, max_size=64),
)
def test_round_trip(identifier: str, sdkappid: int, expire: int, key: str) -> None:
    """Whatever we generate, we verify (and the document reads back)."""
    sig = usersig.generate(sdkappid, key, identifier, expire, now=T0)
    assert usersig.verify(sig, sdkappid, key, identifier, now=T0) is SigVerdict.OK
    document = usersig.decode(sig)
    assert document is not None
    assert (document.identifier, document.expires_at) == (identifier, T0 + expire)
