"""The signing keys behind a JWKS client: cached, fetched once for everyone, failing closed.

A request whose key is not cached waits for a fetch, without holding the event loop or a
worker thread: the concurrent requests of one event loop share one fetch (single flight) and
its outcome, keys or failure, and none waits longer than the timeout. Fetches from several
event loops or from :meth:`JWKSKeys.signing_key_sync` go one at a time, and one that waited
for another takes that one's outcome. A failure is remembered for ``RETRY_AFTER_FAILURE``
seconds, so a key source that is down is not asked again by every request; the first request
after that tries again.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread
import jwt
from anyio.lowlevel import RunVar

from fastapi_tenancy.exceptions import InvalidToken, TenancyUnavailable

__all__ = ["RETRY_AFTER_FAILURE", "JWKSKeys"]

RETRY_AFTER_FAILURE = 1.0
"""Seconds a failed fetch is answered from memory: 503 at once, with no new fetch."""

_UNKNOWN_KEY = "The bearer token was signed with an unknown key."
_UNREACHABLE = "The token signing keys could not be fetched."
_UNUSABLE = "The token signing keys could not be read: the JWKS is not a usable key set."
_LATE = "The token signing keys did not arrive in time."
_DEFAULT_COOLDOWN = 30.0  # PyJWT's: seconds between refreshes for an unknown kid
# anyio 4.1 renamed to_thread.run_sync's "cancellable" to "abandon_on_cancel".
_ABANDON = "abandon_on_cancel" in inspect.signature(anyio.to_thread.run_sync).parameters


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one fetch ended with: the signing keys, or why there are none."""

    at: float
    keys: tuple[jwt.PyJWK, ...] | None
    detail: str = ""
    cause: BaseException | None = None

    def signing_keys(self) -> tuple[jwt.PyJWK, ...]:
        if self.keys is None:
            raise TenancyUnavailable(self.detail) from self.cause
        return self.keys


class _Flight:
    """One fetch in progress, awaited by every request of its event loop that needs it."""

    __slots__ = ("done", "outcome", "since")

    def __init__(self, since: int) -> None:
        self.since = since
        self.done = anyio.Event()
        self.outcome: _Outcome | None = None


class JWKSKeys:
    """The signing keys of ``client`` (a ``jwt.PyJWKClient``), looked up by ``kid``.

    Keys are kept for the client's cache ``lifespan`` (none without a cache); a ``kid`` not in
    a fresh set triggers one refresh at most every ``cooldown_duration`` seconds (PyJWT's
    rule). ``timeout`` bounds how long a request waits for a fetch. A key set that cannot be
    fetched or read raises ``TenancyUnavailable`` (503); a ``kid`` missing from a fresh key set
    raises ``InvalidToken`` (401).
    """

    def __init__(
        self,
        client: jwt.PyJWKClient,
        *,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.timeout = timeout
        cache = client.jwk_set_cache
        self.lifespan = 0.0 if cache is None else float(cache.lifespan)
        self.cooldown = float(getattr(client, "cooldown_duration", _DEFAULT_COOLDOWN))
        self._clock = clock
        self._lock = threading.Lock()  # guards the three fields below; never held during I/O
        self._generation = 0  # fetches ended so far
        self._last: _Outcome | None = None
        self._keys: _Outcome | None = None  # the last fetch that succeeded
        self._flight: RunVar[_Flight | None] = RunVar("fastapi_tenancy.jwks", default=None)
        self._fetching = threading.Lock()  # one fetch at a time, across threads and loops

    async def signing_key(self, kid: object) -> jwt.PyJWK:
        """The key named ``kid``, fetching the key set (in a worker thread) if needed."""
        key = self._cached(kid)
        if key is not None:
            return key
        flight = self._flight.get()
        if flight is None:
            flight = _Flight(self._since())
            self._flight.set(flight)
            try:
                await self._lead(flight)
            finally:
                self._flight.set(None)
                flight.done.set()
        else:
            with anyio.move_on_after(self.timeout):
                await flight.done.wait()
        if flight.outcome is None:
            raise TenancyUnavailable(_LATE)
        return _match(flight.outcome.signing_keys(), kid)

    def signing_key_sync(self, kid: object) -> jwt.PyJWK:
        """The key named ``kid``; blocking, for code outside the event loop."""
        key = self._cached(kid)
        if key is not None:
            return key
        return _match(self._fetch(self._since()).signing_keys(), kid)

    async def _lead(self, flight: _Flight) -> None:
        # Shielded: the followers need this outcome even if the leading request goes away.
        # At the deadline the worker thread is abandoned; it records its outcome when it ends.
        with anyio.move_on_after(self.timeout, shield=True):
            if _ABANDON:
                flight.outcome = await anyio.to_thread.run_sync(
                    self._fetch, flight.since, abandon_on_cancel=True
                )
            else:  # pragma: no cover - anyio 4.0
                flight.outcome = await anyio.to_thread.run_sync(
                    self._fetch, flight.since, cancellable=True
                )
        if flight.outcome is None:
            flight.outcome = _Outcome(self._clock(), None, _LATE)
            self._record(flight.outcome)

    def _cached(self, kid: object) -> jwt.PyJWK | None:
        """The cached key, or ``None`` if a fetch is due; raises for a kid that is unknown."""
        with self._lock:
            keys = self._keys
        if keys is None or keys.keys is None:
            return None
        age = self._clock() - keys.at
        if age >= self.lifespan:
            return None
        for key in keys.keys:
            if key.key_id == kid:
                return key
        if age < self.cooldown:
            raise InvalidToken(_UNKNOWN_KEY)
        return None  # the key set may have been rotated: refresh it

    def _since(self) -> int:
        """The fetches ended so far; raises the last failure if it is recent."""
        with self._lock:
            last, generation = self._last, self._generation
        if last is not None and last.keys is None and self._clock() - last.at < RETRY_AFTER_FAILURE:
            raise TenancyUnavailable(last.detail) from last.cause
        return generation

    def _fetch(self, since: int) -> _Outcome:
        """Fetch the key set (blocking), or take the outcome of a fetch that ended after
        ``since`` while this one waited its turn."""
        if not self._fetching.acquire(timeout=self.timeout):
            return _Outcome(self._clock(), None, _LATE)
        try:
            with self._lock:
                if self._generation != since and self._last is not None:
                    return self._last
            try:
                keys = tuple(self.client.get_signing_keys(refresh=True))
            except (jwt.PyJWKClientConnectionError, OSError) as exc:
                outcome = _Outcome(self._clock(), None, _UNREACHABLE, exc)
            except Exception as exc:
                # Not JSON, not a JWKS, no usable signing key, or a parser's surprise: whatever
                # the endpoint answered, no token is verified with it.
                outcome = _Outcome(self._clock(), None, _UNUSABLE, exc)
            else:
                outcome = _Outcome(self._clock(), keys)
            self._record(outcome)
            return outcome
        finally:
            self._fetching.release()

    def _record(self, outcome: _Outcome) -> None:
        with self._lock:
            self._generation += 1
            self._last = outcome
            if outcome.keys is not None:
                self._keys = outcome


def _match(keys: tuple[jwt.PyJWK, ...], kid: object) -> jwt.PyJWK:
    for key in keys:
        if key.key_id == kid:
            return key
    raise InvalidToken(_UNKNOWN_KEY)
