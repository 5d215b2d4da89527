"""Endpoint keys kept so that get_keys() can give them again, as the cloud SDK does: each key is
encrypted (Fernet: AES-128-CBC and HMAC-SHA256) with a key derived from the server's secret key.

The database alone does not give them away (a copy of it, a backup): reading one needs the
server's secret key too, which no run, build or scoring process can read (the box hides the data
folder and passes none of the server's variables). Only the server decrypts them, when a
contributor or owner of the workspace asks. Requests are checked against the keys' hashes, never
by decrypting. After DJANGO_SECRET_KEY changes, the kept keys cannot be read: regen_key() makes
new ones.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

PURPOSE = b"trainhub endpoint keys v1\0"


def _fernet() -> Fernet:
    derived = hashlib.sha256(PURPOSE + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def seal(key: str) -> str:
    return _fernet().encrypt(key.encode()).decode()


def unseal(sealed: str) -> str | None:
    """The key, or None when none is kept or it was sealed under another secret key."""
    if not sealed:
        return None
    try:
        return _fernet().decrypt(sealed.encode()).decode()
    except InvalidToken:
        return None
