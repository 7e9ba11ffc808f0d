"""API keys and end-user ids: keys are shown once and stored as hashes; user ids as keyed hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "fw_"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # Keys carry 256 bits of randomness, so a plain digest is safe and lookups stay indexed.
    return hashlib.sha256(key.encode()).hexdigest()


def hash_user_id(user_id: str, key: bytes) -> str:
    """Keyed, so a leaked database cannot be reversed by hashing guessed ids."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
