"""The keys Postroom signs tokens with, derived from the site's secrets (decision 0013).

The configuration gives one or more secrets (each at least 32 bytes).  Nothing signs with
a secret directly: each purpose gets its own key, derived with HKDF-SHA256 (RFC 5869)
with the purpose as ``info``, so a token minted for one purpose can never verify for
another (an agent's reply token never approves, an approval token never sends a reply)
and a new purpose never needs a new secret.

Rotation: the first secret mints, every secret verifies.  Add the new secret in front,
keep the old one until the mail forwarded under it has been answered, then drop it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["MIN_SECRET_BYTES", "KeyRing", "hkdf_sha256"]

MIN_SECRET_BYTES = 32
_HASH_LEN = hashlib.sha256().digest_size
# A fixed, public salt (RFC 5869 §3.1: a salt need not be secret; a constant one still
# gives HKDF's extract step a proper key).  Changing it changes every derived key.
_SALT = b"postroom key derivation v1"
_TOKEN_INFO = b"postroom/reply-token"
_APPROVAL_INFO = b"postroom/approval-token"


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = _HASH_LEN) -> bytes:
    """HKDF (RFC 5869) with HMAC-SHA256: extract, then expand to ``length`` bytes."""
    if not 0 < length <= 255 * _HASH_LEN:
        raise ValueError(f"HKDF-SHA256 gives 1 to {255 * _HASH_LEN} bytes, not {length}")
    # §2.2: an empty salt means HashLen zero bytes.
    prk = hmac.new(salt or bytes(_HASH_LEN), ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for counter in range(1, -(-length // _HASH_LEN) + 1):  # §2.3: T(1) .. T(N)
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


@dataclass(frozen=True)
class KeyRing:
    """Per-purpose keys, one per secret, in the order of the secrets: index 0 mints."""

    token: tuple[bytes, ...] = field(repr=False)
    approval: tuple[bytes, ...] = field(repr=False)

    @classmethod
    def from_secrets(cls, secrets: Sequence[bytes]) -> KeyRing:
        if not secrets:
            raise ValueError("at least one secret is needed")
        for secret in secrets:
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(f"a secret must be at least {MIN_SECRET_BYTES} bytes")
        return cls(
            token=tuple(hkdf_sha256(s, salt=_SALT, info=_TOKEN_INFO) for s in secrets),
            approval=tuple(hkdf_sha256(s, salt=_SALT, info=_APPROVAL_INFO) for s in secrets),
        )

    @property
    def token_key(self) -> bytes:
        """The key new reply tokens are minted with."""
        return self.token[0]

    @property
    def approval_key(self) -> bytes:
        """The key new approval tokens are minted with."""
        return self.approval[0]
