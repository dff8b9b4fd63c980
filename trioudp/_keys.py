"""The shared keys of ``key=``: checking them, and the session ids of an
endpoint that has one (docs/security.md)."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from ._frame import KEY_SIZES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from typing_extensions import Buffer


#: The most keys ``key=`` takes at once (each key tried costs a tag per frame
#: that the first does not authenticate: a forged one costs them all).
MAX_KEYS = 4


def check_key(key: Buffer | Sequence[Buffer] | None) -> tuple[bytes, ...] | None:
    """The ``key=`` of an ``open_*`` call, checked: one secret, or a list or
    tuple of them for rotation (the first signs, every one is accepted)."""
    if key is None:
        return None
    if isinstance(key, (list, tuple)):
        if not 1 <= len(key) <= MAX_KEYS:
            raise ValueError(
                f"key= takes 1 to {MAX_KEYS} keys (the first signs what is sent, every one "
                f"is accepted), got {len(key)}"
            )
        return tuple(_check_secret(each) for each in key)
    return (_check_secret(key),)


def _check_secret(key: object) -> bytes:
    try:
        view = memoryview(key)  # type: ignore[arg-type]  # an int or a str is not
    except TypeError:
        raise TypeError(
            f"key must be bytes-like (bytes, bytearray, memoryview), or a list of them for "
            f"rotation, got {type(key).__name__}: a random secret shared by both ends, such "
            f"as secrets.token_bytes(32)"
        ) from None
    secret = view.tobytes()
    if len(secret) not in KEY_SIZES:
        raise ValueError(
            f"key must be {KEY_SIZES.start} to {KEY_SIZES.stop - 1} bytes, got {len(secret)}: "
            f"a random secret shared by both ends, such as secrets.token_bytes(32)"
        )
    if not any(secret):
        raise ValueError(
            "key is all zero bytes, which is no secret: use a random one shared by both ends, "
            "such as secrets.token_bytes(32)"
        )
    return secret


def keyed_session_id(seconds: float) -> int:
    """A session id for an endpoint with a key: the wall-clock second it was
    made in the top 32 bits (authenticated with every frame), 32 random bits
    below. Receivers refuse a unicast session older than the one they have."""
    return (int(seconds) & 0xFFFFFFFF) << 32 | secrets.randbits(32)


def session_id_now() -> int:
    """A keyed session id made now."""
    return keyed_session_id(time.time())
