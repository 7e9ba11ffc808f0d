"""API keys and end-user ids: keys are shown once and stored as hashes; user ids as keyed hashes."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

KEY_PREFIX = "fw_"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # Keys carry 256 bits of randomness, so a plain digest is safe and lookups stay indexed.
    return hashlib.sha256(key.encode()).hexdigest()


def user_namespace(client_id: int | None) -> str:
    """Whose users an id belongs to: a client's ("42"), or the admin token's calls ("admin").
    Two teams' "alice" are two people."""
    return "admin" if client_id is None else str(client_id)


def hash_user_id(user_id: str, key: bytes, namespace: str | None) -> str:
    """Keyed, so a leaked database cannot be reversed by hashing guessed ids; within the client's
    `namespace`, so erasing one team's user leaves another team's user of the same id alone.
    (`namespace=None`: the un-namespaced hash stored before namespaces, still matched by erasure.)"""
    message = user_id if namespace is None else f"{namespace}\x00{user_id}"
    return mac(key, message)


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1): who may act as admin without a token."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def printable(value: str) -> str:
    """`value` fit for one line of a plain-text log: a newline, any other control character or
    invisible separator becomes its escape (`\\n`, `\\x1b`, `\\u2028`), so a request path
    decoded from `%0A` cannot end the line and forge the next one."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value)


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose from the deployment's secret, so a value signed for one use is
    worthless for another."""
    return hmac.new(secret, f"flywheel:{purpose}".encode(), hashlib.sha256).digest()


def mac(key: bytes, value: str) -> str:
    """HMAC-SHA256 of `value` under `key`, in hex."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, value: str) -> str:
    """`value.signature`: the value, then its `mac` after the last '.'."""
    return f"{value}.{mac(key, value)}"


def unsign(key: bytes, token: str) -> str | None:
    """The value of a token made by `sign` with this key; None if it was tampered with."""
    value, dot, signature = token.rpartition(".")
    if not dot:
        return None
    return value if same_secret(signature, mac(key, value)) else None
