"""Signer: published vectors, parameterised schemes, credentials only from the environment."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
from urllib.parse import quote

import pytest

from runtime.signing import Signer, SigningError, SigningParams, encode_query, prehash
from runtime.spec import SigningSpec

KEY_ENV, SECRET_ENV, PASS_ENV = "T_API_KEY", "T_API_SECRET", "T_API_PASSPHRASE"
HEX = SigningSpec("hmac_sha256_hex", KEY_ENV, SECRET_ENV)
B64 = SigningSpec("hmac_sha256_base64", KEY_ENV, SECRET_ENV, PASS_ENV)

# Binance spot API docs, "SIGNED Endpoint Examples for POST /api/v3/order"
# (github.com/binance/binance-spot-api-docs, rest-api.md; also developers.binance.com,
# rest-api/request-security). Example keys published for illustration only.
BN_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
BN_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
BN_PARAMS = [
    ("symbol", "LTCBTC"),
    ("side", "BUY"),
    ("type", "LIMIT"),
    ("timeInForce", "GTC"),
    ("quantity", "1"),
    ("price", "0.1"),
    ("recvWindow", "5000"),
    ("timestamp", "1499827319559"),
]
BN_QUERY = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
BN_SIG = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
BN_SIG_MIXED = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
BN_SIG_UNICODE = "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
BN_PARAMS_HEX = SigningParams(key_header="X-MBX-APIKEY")

# OKX v5 docs: example SecretKey and timestamps from the "REST Authentication" and WebSocket
# "Login" sections. OKX publishes no signature computable from them (the login example's
# "7L+zFQ+CEgGu5rzCj4+BdV2/uUHGqddA9pI6ztsRRPs=" was made with another secret), so expected
# values are computed here independently with hmac/base64.
OKX_SECRET = "22582BD0CFF14C41EDBF1AB98506286D"
OKX_PARAMS = SigningParams(
    key_header="OK-ACCESS-KEY",
    sign_header="OK-ACCESS-SIGN",
    timestamp_header="OK-ACCESS-TIMESTAMP",
    passphrase_header="OK-ACCESS-PASSPHRASE",
    timestamp_format="iso_ms",
)


def reference_b64(secret: str, message: str) -> str:
    """Independent HMAC-SHA256 + base64, as the venues' docs write it."""
    return base64.b64encode(hmac.new(secret.encode(), message.encode(), "sha256").digest()).decode()


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv(KEY_ENV, BN_KEY)
    monkeypatch.setenv(SECRET_ENV, BN_SECRET)
    monkeypatch.setenv(PASS_ENV, "123456")
    return monkeypatch


# -- hmac_sha256_hex: Binance's published vectors -----------------------------------------------


def test_hex_query_string_matches_published_example(creds: pytest.MonkeyPatch) -> None:
    signed = Signer(HEX, BN_PARAMS_HEX).sign("POST", "/api/v3/order", BN_PARAMS)
    assert signed.query == f"{BN_QUERY}&signature={BN_SIG}"
    assert signed.headers == {"X-MBX-APIKEY": BN_KEY}
    assert signed.body == ""


def test_hex_request_body_matches_published_example(creds: pytest.MonkeyPatch) -> None:
    signed = Signer(HEX, BN_PARAMS_HEX).sign("POST", "/api/v3/order", body=BN_QUERY)
    # The body carries the timestamp already, so none is added to the query.
    assert signed.query == f"signature={BN_SIG}"
    assert signed.body == BN_QUERY


def test_hex_mixed_query_and_body_matches_published_example(creds: pytest.MonkeyPatch) -> None:
    signed = Signer(HEX, BN_PARAMS_HEX).sign(
        "POST",
        "/api/v3/order",
        BN_PARAMS[:4],
        body="quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
    )
    assert (
        signed.query
        == f"symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&signature={BN_SIG_MIXED}"
    )


def test_hex_non_ascii_is_percent_encoded_as_published(creds: pytest.MonkeyPatch) -> None:
    params = [("symbol", "１２３４５６"), *BN_PARAMS[1:]]
    signed = Signer(HEX, BN_PARAMS_HEX).sign("POST", "/api/v3/order", params)
    encoded = "%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96"
    assert signed.query.startswith(f"symbol={encoded}&side=BUY")
    assert signed.query.endswith(f"&signature={BN_SIG_UNICODE}")


def test_hex_adds_timestamp_and_recv_window(creds: pytest.MonkeyPatch) -> None:
    params = SigningParams(
        key_header="X-MBX-APIKEY", recv_window_param="recvWindow", recv_window=5000
    )
    signer = Signer(HEX, params, clock=lambda: 1499827319.559)
    signed = signer.sign("POST", "/api/v3/order", BN_PARAMS[:6])
    assert signed.query == f"{BN_QUERY}&signature={BN_SIG}"


def test_hex_signature_param_is_a_parameter(creds: pytest.MonkeyPatch) -> None:
    params = SigningParams(key_header="K", signature_param="sig", timestamp_param=None)
    signed = Signer(HEX, params).sign("GET", "/x", BN_PARAMS)
    assert signed.query == f"{BN_QUERY}&sig={BN_SIG}"
    assert signed.headers == {"K": BN_KEY}


# -- hmac_sha256_base64 -------------------------------------------------------------------------


def test_base64_primitive_matches_rfc4231_case_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "k")
    monkeypatch.setenv(SECRET_ENV, "Jefe")
    signer = Signer(SigningSpec("hmac_sha256_base64", KEY_ENV, SECRET_ENV))
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert signer.sign_hex("what do ya want for nothing?") == expected
    assert (
        signer.sign_base64("what do ya want for nothing?")
        == base64.b64encode(bytes.fromhex(expected)).decode()
    )


def test_prehash_is_timestamp_method_path_body() -> None:
    assert prehash("1", "post", "/a?b=c", '{"d":1}') == '1POST/a?b=c{"d":1}'


def test_base64_get_with_query(creds: pytest.MonkeyPatch) -> None:
    creds.setenv(SECRET_ENV, OKX_SECRET)
    ts = "2020-12-08T09:08:57.715Z"
    signed = Signer(B64, OKX_PARAMS).sign(
        "GET", "/api/v5/account/balance", {"ccy": "BTC"}, timestamp=ts
    )
    assert signed.query == "ccy=BTC"
    assert signed.headers == {
        "OK-ACCESS-KEY": BN_KEY,
        "OK-ACCESS-SIGN": reference_b64(OKX_SECRET, ts + "GET/api/v5/account/balance?ccy=BTC"),
        "OK-ACCESS-TIMESTAMP": ts,
        "OK-ACCESS-PASSPHRASE": "123456",
    }
    assert signed.headers["OK-ACCESS-SIGN"] == "HiZhvSfMtWJA3uUIVXV3a/bSXNPCWvYFXoGCVS8V4zY="


def test_base64_post_with_body(creds: pytest.MonkeyPatch) -> None:
    creds.setenv(SECRET_ENV, OKX_SECRET)
    body = '{"instId":"BTC-USDT","lever":"5","mgnMode":"isolated"}'
    signer = Signer(B64, OKX_PARAMS, clock=lambda: 1607418537.715)
    signed = signer.sign("POST", "/api/v5/account/set-leverage", body=body)
    ts = "2020-12-08T09:08:57.715Z"
    assert signed.headers["OK-ACCESS-TIMESTAMP"] == ts
    expected = reference_b64(OKX_SECRET, ts + "POST/api/v5/account/set-leverage" + body)
    assert signed.headers["OK-ACCESS-SIGN"] == expected
    assert signed.query == ""


def test_base64_decoded_query_and_hmac_passphrase(creds: pytest.MonkeyPatch) -> None:
    # KuCoin docs: the pre-hash string carries the query *not* URL-encoded; v2+ keys send
    # base64(HMAC(secret, passphrase)) and a key-version header.
    params = SigningParams(
        key_header="KC-API-KEY",
        sign_header="KC-API-SIGN",
        timestamp_header="KC-API-TIMESTAMP",
        passphrase_header="KC-API-PASSPHRASE",
        passphrase_mode="hmac",
        prehash_query="decoded",
        extra_headers={"KC-API-KEY-VERSION": "2"},
    )
    signer = Signer(B64, params, clock=lambda: 1547015186.532)
    query = {"apiKey": "67b3", "subName": "test", "passphrase": "abc!@#11"}
    signed = signer.sign("GET", "/api/v1/sub/api-key", query)
    assert signed.query == "apiKey=67b3&subName=test&passphrase=abc%21%40%2311"
    pre = "1547015186532GET/api/v1/sub/api-key?apiKey=67b3&subName=test&passphrase=abc!@#11"
    assert signed.headers == {
        "KC-API-KEY": BN_KEY,
        "KC-API-SIGN": reference_b64(BN_SECRET, pre),
        "KC-API-TIMESTAMP": "1547015186532",
        "KC-API-PASSPHRASE": reference_b64(BN_SECRET, "123456"),
        "KC-API-KEY-VERSION": "2",
    }


def test_base64_encoded_secret(creds: pytest.MonkeyPatch) -> None:
    raw = bytes(range(32))
    creds.setenv(SECRET_ENV, base64.b64encode(raw).decode())
    signer = Signer(B64, SigningParams(secret_encoding="base64"))
    expected = base64.b64encode(hmac.new(raw, b"x", hashlib.sha256).digest()).decode()
    assert signer.sign_base64("x") == expected


def test_invalid_base64_secret_is_named_not_shown(creds: pytest.MonkeyPatch) -> None:
    creds.setenv(SECRET_ENV, "not base64!!")
    with pytest.raises(SigningError, match=SECRET_ENV) as info:
        Signer(B64, SigningParams(secret_encoding="base64"))
    assert "not base64!!" not in str(info.value)


# -- WebSocket login ----------------------------------------------------------------------------


def test_login_values(creds: pytest.MonkeyPatch) -> None:
    creds.setenv(KEY_ENV, "985d5b66-57ce-40fb-b714-afc0b9787083")
    creds.setenv(SECRET_ENV, OKX_SECRET)
    values = Signer(B64).login_values("1538054050")
    assert values == {
        "api_key": "985d5b66-57ce-40fb-b714-afc0b9787083",
        "passphrase": "123456",
        "timestamp": "1538054050",
        "sign": reference_b64(OKX_SECRET, "1538054050GET/users/self/verify"),
    }
    assert values["sign"] == "+LdIr8lkkvhr5hoA3g9TMC0+uQJ849ftAcocA/ouu4M="


def test_login_timestamp_defaults_to_epoch_seconds(creds: pytest.MonkeyPatch) -> None:
    values = Signer(B64, clock=lambda: 1538054050.9).login_values()
    assert values["timestamp"] == "1538054050"
    assert values["sign"] == reference_b64(BN_SECRET, "1538054050GET/users/self/verify")


def test_login_without_passphrase_gives_none(creds: pytest.MonkeyPatch) -> None:
    assert Signer(HEX).login_values(1)["passphrase"] is None


# -- credentials --------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [KEY_ENV, SECRET_ENV, PASS_ENV])
def test_missing_env_var_is_named(creds: pytest.MonkeyPatch, missing: str) -> None:
    creds.delenv(missing)
    with pytest.raises(SigningError, match=missing) as info:
        Signer(B64)
    for value in (BN_KEY, BN_SECRET, "123456"):
        assert value not in str(info.value)


def test_blank_env_var_counts_as_missing(creds: pytest.MonkeyPatch) -> None:
    creds.setenv(SECRET_ENV, "  ")
    with pytest.raises(SigningError, match=SECRET_ENV):
        Signer(HEX)


def test_credentials_are_read_once_at_construction(creds: pytest.MonkeyPatch) -> None:
    signer = Signer(HEX, BN_PARAMS_HEX)
    creds.setenv(SECRET_ENV, "changed")
    creds.delenv(KEY_ENV)
    assert signer.sign("POST", "/", BN_PARAMS).query.endswith(BN_SIG)


def test_secrets_do_not_show(creds: pytest.MonkeyPatch) -> None:
    signer = Signer(B64, OKX_PARAMS)
    shown = [repr(signer), str(signer), repr(vars(signer)), str(vars(signer))]
    for text in shown:
        for value in (BN_KEY, BN_SECRET, "123456"):
            assert value not in text
    assert KEY_ENV in repr(signer)
    with pytest.raises(TypeError):
        pickle.dumps(signer)


def test_redact(creds: pytest.MonkeyPatch) -> None:
    signer = Signer(B64)
    text = f"echo {BN_KEY} and {BN_SECRET} and 123456"
    assert signer.redact(text) == "echo <redacted> and <redacted> and <redacted>"


def test_encode_query_keeps_only_unreserved_literal() -> None:
    assert encode_query([("a b", "x/y,z~-._")]) == "a%20b=x%2Fy%2Cz~-._"
    assert quote("~") == "~"
