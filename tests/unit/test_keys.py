"""postroom.core.keys: HKDF (RFC 5869) and the per-purpose keys derived from the secrets."""

from __future__ import annotations

import pytest

from postroom.core.keys import KeyRing, hkdf_sha256

# RFC 5869 Appendix A, test cases 1-3 (SHA-256).
VECTORS = [
    (
        "0b" * 22,
        "000102030405060708090a0b0c",
        "f0f1f2f3f4f5f6f7f8f9",
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        bytes(range(0x00, 0x50)).hex(),
        bytes(range(0x60, 0xB0)).hex(),
        bytes(range(0xB0, 0x100)).hex(),
        82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    ("0b" * 22, "", "", 42, "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), VECTORS)
def test_hkdf_matches_rfc_5869(ikm: str, salt: str, info: str, length: int, okm: str) -> None:
    got = hkdf_sha256(bytes.fromhex(ikm), salt=bytes.fromhex(salt), info=bytes.fromhex(info), length=length)
    assert got.hex() == okm


def test_hkdf_refuses_impossible_lengths() -> None:
    for length in (0, 255 * 32 + 1):
        with pytest.raises(ValueError):
            hkdf_sha256(b"k", salt=b"", info=b"", length=length)


def test_each_purpose_gets_its_own_key_and_no_key_is_the_secret() -> None:
    secret = b"s" * 32
    ring = KeyRing.from_secrets([secret])
    assert ring.token_key != ring.approval_key
    assert secret not in (ring.token_key, ring.approval_key)
    assert len(ring.token_key) == len(ring.approval_key) == 32
    assert KeyRing.from_secrets([secret]) == ring  # deterministic


def test_the_first_secret_mints_and_every_secret_verifies() -> None:
    new, old = b"n" * 32, b"o" * 32
    ring = KeyRing.from_secrets([new, old])
    assert ring.token_key == KeyRing.from_secrets([new]).token_key
    assert ring.token[1] == KeyRing.from_secrets([old]).token_key


def test_short_or_missing_secrets_are_refused() -> None:
    with pytest.raises(ValueError):
        KeyRing.from_secrets([])
    with pytest.raises(ValueError):
        KeyRing.from_secrets([b"x" * 31])


def test_keys_never_show_in_repr() -> None:
    ring = KeyRing.from_secrets([b"s" * 32])
    assert ring.token_key.hex() not in repr(ring) and "token=" not in repr(ring)
