"""DICOMweb destinations' bearer tokens, encrypted at rest (Fernet: AES-128-CBC with an HMAC).

The key is settings.ROUTE_TOKEN_KEY, or derived from SECRET_KEY when that is empty (HKDF,
its own label, so that the session key is never used as it is). A database dump without the
key gives no token; the pages and the API never show one back, only whether one is set.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_LABEL = b"alliance-cloudpacs routing destination token"


class TokenUnreadable(Exception):
    """The stored token was encrypted with another key (ROUTE_TOKEN_KEY or SECRET_KEY changed)."""


@lru_cache(maxsize=4)
def _fernet(secret: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL).derive(secret.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def _current() -> Fernet:
    return _fernet(settings.ROUTE_TOKEN_KEY or settings.SECRET_KEY)


def seal(token: str) -> str:
    """The token as stored ("" stays "": no token)."""
    return _current().encrypt(token.encode("utf-8")).decode("ascii") if token else ""


def unseal(sealed: str) -> str:
    if not sealed:
        return ""
    try:
        return _current().decrypt(sealed.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise TokenUnreadable("the destination's token was stored under another key: enter it again") from None
