"""Signed callback URLs: round trips, tampering, rotation and reference binding."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decisiontelecom_viber import ConfigurationError
from decisiontelecom_viber._signing import signed_callback_url, verify_callback_token


SECRET = "k9bT7q2xv0-new-secret-0123456789"
OLD_SECRET = "old-secret-abcdefghijklmnopqrstu"
URL = "https://example.com/viber/callbacks"
TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")


def query(url: str) -> str:
    return urlsplit(url).query


def params(url: str) -> list[tuple[str, str]]:
    return parse_qsl(query(url), keep_blank_values=True)


def token_of(url: str, name: str = "token") -> str:
    (token,) = [value for key, value in params(url) if key == name]
    return token


class TestSignedUrl:
    def test_round_trip(self) -> None:
        """A signed URL's query verifies with the same secret."""
        url = signed_callback_url(URL, SECRET)

        assert verify_callback_token(query(url), SECRET)

    def test_token_format(self) -> None:
        """The token is 128 bits as base64url without padding: 22 characters."""
        token = token_of(signed_callback_url(URL, SECRET))

        assert TOKEN.fullmatch(token), token

    def test_url_is_otherwise_unchanged(self) -> None:
        """Scheme, host, path and fragment are kept; only the token is added."""
        url = signed_callback_url(URL + "#frag", SECRET)
        parts = urlsplit(url)

        assert ("https", "example.com", "/viber/callbacks", "frag") == (
            parts.scheme,
            parts.netloc,
            parts.path,
            parts.fragment,
        )
        assert ["token"] == [key for key, _ in params(url)]

    def test_deterministic(self) -> None:
        """The same URL, secret and reference always give the same token."""
        assert signed_callback_url(URL, SECRET, reference="a") == signed_callback_url(
            URL, SECRET, reference="a"
        )

    def test_secret_as_bytes_or_str(self) -> None:
        """A str secret is its UTF-8 bytes."""
        assert signed_callback_url(URL, SECRET) == signed_callback_url(
            URL, SECRET.encode()
        )

    def test_different_secrets_give_different_tokens(self) -> None:
        """The token depends on the secret."""
        assert token_of(signed_callback_url(URL, SECRET)) != token_of(
            signed_callback_url(URL, OLD_SECRET)
        )

    def test_existing_params_are_kept_as_written_and_signed(self) -> None:
        """Existing parameters stay verbatim, and changing them breaks the token."""
        url = signed_callback_url(URL + "?tenant=acme&path=%7Ea%20b", SECRET)

        assert query(url).startswith("tenant=acme&path=%7Ea%20b&token=")
        assert verify_callback_token(query(url), SECRET)
        assert not verify_callback_token(
            query(url).replace("tenant=acme", "tenant=evil"), SECRET
        )

    def test_reference_is_added_and_signed(self) -> None:
        """reference becomes the ref parameter, percent-encoded."""
        url = signed_callback_url(URL, SECRET, reference="order 42/ü")

        assert [("ref", "order 42/ü"), ("token", token_of(url))] == params(url)
        assert "ref=order%2042%2F%C3%BC" in query(url)
        assert verify_callback_token(query(url), SECRET)

    def test_resigning_replaces_the_old_token(self) -> None:
        """Signing a signed URL again gives one token, valid for the new secret."""
        once = signed_callback_url(URL + "?a=1", OLD_SECRET)
        twice = signed_callback_url(once, SECRET)

        assert 1 == sum(key == "token" for key, _ in params(twice))
        assert verify_callback_token(query(twice), SECRET)
        assert not verify_callback_token(query(twice), OLD_SECRET)

    def test_custom_param_name(self) -> None:
        """The token parameter name can be chosen; verification must use it too."""
        url = signed_callback_url(URL, SECRET, param="sig")

        assert TOKEN.fullmatch(token_of(url, "sig"))
        assert verify_callback_token(query(url), SECRET, param="sig")
        assert not verify_callback_token(query(url), SECRET)

    @pytest.mark.parametrize(
        ("kwargs", "url"),
        [
            pytest.param({"reference": ""}, URL, id="empty-reference"),
            pytest.param({"reference": "b"}, URL + "?ref=a", id="ref-already-there"),
            pytest.param({"param": ""}, URL, id="empty-param"),
            pytest.param({"param": "ref"}, URL, id="param-is-ref"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, str], url: str) -> None:
        """Ambiguous or empty arguments are refused."""
        with pytest.raises(ConfigurationError):
            signed_callback_url(url, SECRET, **kwargs)

    @pytest.mark.parametrize("secret", ["", b""])
    def test_empty_secret_is_refused(self, secret: str | bytes) -> None:
        """An empty secret would make tokens anyone can compute."""
        with pytest.raises(ConfigurationError):
            signed_callback_url(URL, secret)


class TestVerify:
    def test_wrong_secret(self) -> None:
        """A token made with another secret fails."""
        url = signed_callback_url(URL, OLD_SECRET)

        assert not verify_callback_token(query(url), SECRET)

    def test_rotation_accepts_any_listed_secret(self) -> None:
        """During rotation, tokens of the old and the new secret both verify."""
        old = signed_callback_url(URL, OLD_SECRET, reference="1")
        new = signed_callback_url(URL, SECRET, reference="1")

        assert verify_callback_token(query(old), [SECRET, OLD_SECRET])
        assert verify_callback_token(query(new), (SECRET.encode(), OLD_SECRET))
        assert not verify_callback_token(query(old), [SECRET])

    @pytest.mark.parametrize(
        "tamper",
        [
            pytest.param(lambda q: q.replace("ref=42", "ref=43"), id="other-ref"),
            pytest.param(lambda q: q.replace("ref=42&", ""), id="ref-removed"),
            pytest.param(lambda q: q + "&extra=1", id="param-added"),
            pytest.param(lambda q: q.replace("a=1&", ""), id="param-removed"),
            pytest.param(lambda q: q.replace("a=1", "a=2"), id="param-changed"),
            pytest.param(lambda q: q + "&ref=43", id="second-ref"),
            pytest.param(lambda q: q.replace("token=", "token=A"), id="token-longer"),
            pytest.param(lambda q: q[:-1], id="token-shorter"),
            pytest.param(
                lambda q: q[:-1] + ("A" if q[-1] != "A" else "B"), id="token-changed"
            ),
            pytest.param(lambda q: q.replace("token=", "tokn="), id="token-renamed"),
            pytest.param(lambda q: q + "&token=x", id="second-token"),
            pytest.param(lambda q: q.split("&token=")[0], id="token-missing"),
            pytest.param(lambda q: q.split("&token=")[0] + "&token=", id="token-empty"),
        ],
    )
    def test_tampering_fails(self, tamper: Callable[[str], str]) -> None:
        """Any change to a signed parameter or to the token is refused."""
        url = signed_callback_url(URL + "?a=1", SECRET, reference="42")
        assert verify_callback_token(query(url), SECRET)

        tampered = tamper(query(url))

        assert tampered != query(url)
        assert not verify_callback_token(tampered, SECRET)

    def test_token_for_one_reference_cannot_sign_another(self) -> None:
        """A token leaked with one message's URL is useless for another reference."""
        leaked = token_of(signed_callback_url(URL, SECRET, reference="order-1"))

        assert not verify_callback_token(f"ref=order-2&token={leaked}", SECRET)
        assert verify_callback_token(f"ref=order-1&token={leaked}", SECRET)

    def test_proxy_rewrites_of_scheme_host_and_path_do_not_matter(self) -> None:
        """Only the query is signed: the token survives a proxy's URL rewrite."""
        url = signed_callback_url(URL + "?a=1", SECRET, reference="7")
        rewritten = url.replace("https://example.com/viber", "http://10.0.0.5:8000")

        assert verify_callback_token(query(rewritten), SECRET)

    @pytest.mark.parametrize(
        "rewrite",
        [
            pytest.param(lambda q: "&".join(reversed(q.split("&"))), id="reordered"),
            pytest.param(lambda q: q.replace("%7E", "~"), id="tilde-unescaped"),
            pytest.param(lambda q: q.replace("%20", "+"), id="space-as-plus"),
            pytest.param(lambda q: q.replace("b=", "%62="), id="name-escaped"),
            pytest.param(lambda q: "?" + q, id="leading-question-mark"),
        ],
    )
    def test_query_re_encodings_still_verify(
        self, rewrite: Callable[[str], str]
    ) -> None:
        """The decoded parameters are signed, so re-encoding or reordering is fine."""
        url = signed_callback_url(URL + "?b=%7Ex%20y&a=1", SECRET, reference="r")

        rewritten = rewrite(query(url))

        assert rewritten != query(url)
        assert verify_callback_token(rewritten, SECRET)

    def test_query_forms(self) -> None:
        """The query may be a str, ASGI bytes, a mapping or a list of pairs."""
        url = signed_callback_url(URL + "?a=1", SECRET, reference="r")
        pairs = params(url)

        for form in (query(url), query(url).encode(), dict(pairs), pairs):
            assert verify_callback_token(form, SECRET), form

    def test_repeated_params_need_the_raw_query(self) -> None:
        """A mapping drops repeated values, so the check then fails (safely)."""
        url = signed_callback_url(URL + "?a=1&a=2", SECRET)

        assert verify_callback_token(query(url), SECRET)
        assert not verify_callback_token(dict(params(url)), SECRET)

    @pytest.mark.parametrize(
        "token",
        ["ü" * 22, "%FF" * 22, "\x00" * 22, "A" * 22 + "=", "=" * 24],
    )
    def test_odd_tokens_are_simply_wrong(self, token: str) -> None:
        """Non-ASCII, binary or padded tokens fail without raising."""
        assert not verify_callback_token(f"token={token}", SECRET)
        assert not verify_callback_token([("token", token)], SECRET)

    @pytest.mark.parametrize(
        "secrets",
        [
            pytest.param("", id="empty-str"),
            pytest.param(b"", id="empty-bytes"),
            pytest.param([], id="no-secrets"),
            pytest.param([SECRET, ""], id="one-empty"),
            pytest.param([SECRET, 42], id="wrong-type"),
        ],
    )
    def test_bad_secrets_are_refused(self, secrets: object) -> None:
        """An empty or missing secret is a configuration error, not a pass."""
        url = signed_callback_url(URL, SECRET)

        with pytest.raises(ConfigurationError):
            verify_callback_token(query(url), secrets)  # type: ignore[arg-type]


FUZZ = settings(max_examples=300, deadline=None)
names = st.text(min_size=1, max_size=8).filter(lambda n: n not in {"ref", "token"})


@FUZZ
@given(
    st.lists(st.tuples(names, st.text(max_size=12)), max_size=4),
    st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    st.binary(min_size=1, max_size=40),
)
def test_round_trip_for_any_params_and_reference(
    existing: list[tuple[str, str]], reference: str | None, secret: bytes
) -> None:
    """Any existing parameters and reference sign and verify; another ref fails."""
    base = URL + ("?" + urlencode(existing) if existing else "")

    url = signed_callback_url(base, secret, reference=reference)

    assert verify_callback_token(query(url), secret)
    assert verify_callback_token(query(url), [b"other", secret])
    if reference is not None:
        assert not verify_callback_token(query(url).replace("ref=", "ref=x", 1), secret)


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_queries_verify_false_or_true_never_raise(raw: str) -> None:
    """Any query string gives a bool; random ones do not verify."""
    assert False is verify_callback_token(raw, SECRET)
