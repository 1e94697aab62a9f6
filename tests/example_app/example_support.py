"""Constants and helpers shared by the example app's tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import time
from typing import Any

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from example_app.seed import SEED_USERS

SECRET = "example-app-test-only-key-long-enough-for-hs512-too-0123456789abcdef"
BASE_DOMAIN = "example.test"
FAST_HASH = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))
PASSWORDS = {user.email: user.password for user in SEED_USERS}

Headers = dict[str, str]


def mint(claims: dict[str, Any], *, key: str = SECRET, algorithm: str = "HS256") -> str:
    """A token signed like the app's, with exactly these claims (``exp`` is not added)."""
    return jwt.encode(claims, key, algorithm=algorithm)


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def in_an_hour() -> int:
    return int(time.time()) + 3600
