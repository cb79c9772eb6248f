"""Secret generation: passwords and keys from the operating system's CSPRNG. Passwords use a
URL-safe alphabet so they need no quoting in URLs, env files or compose files."""

from __future__ import annotations

import math
import secrets as _csprng
import string

from semantik_infra.errors import ConfigError

URL_SAFE_ALPHABET = string.ascii_letters + string.digits + "-_"
MIN_ENTROPY_BITS = 128
# 43 characters from 64 symbols carry 258 bits: at least 256 bits by default.
DEFAULT_PASSWORD_LENGTH = 43


def entropy_bits(length: int, alphabet: str = URL_SAFE_ALPHABET) -> float:
    """Bits of entropy in a uniformly random string of this length over this alphabet."""
    return length * math.log2(len(alphabet))


def generate_password(length: int = DEFAULT_PASSWORD_LENGTH) -> str:
    """A random URL-safe password; refuses lengths below 128 bits of entropy."""
    if entropy_bits(length) < MIN_ENTROPY_BITS:
        need = math.ceil(MIN_ENTROPY_BITS / math.log2(len(URL_SAFE_ALPHABET)))
        raise ConfigError(f"password length {length} is too short: use at least {need} characters")
    return "".join(_csprng.choice(URL_SAFE_ALPHABET) for _ in range(length))


def generate_encryption_key() -> str:
    """A random 256-bit key for backup encryption, as URL-safe base64 text."""
    import base64

    return base64.urlsafe_b64encode(_csprng.token_bytes(32)).decode("ascii")
