"""The failed-login throttle: guessing is slowed down, and nobody can lock someone else out.

Failures are counted in memory, three ways, and forgotten an hour after the last one:

- per (account, address): from the 5th failure in a row that account cannot log in *from that address* for 30
  seconds, doubling with every further failure up to 15 minutes;
- per address, whatever the account: from the 21st failure the address itself waits the same way (one
  address spraying many accounts);
- per account, from any address: once an account has failed 20 times, every address that fails on it waits
  after each of its own failures (many addresses guessing one password).

A wait only ever applies to an address that has itself failed, so the right password from an address that has
not failed is never refused: nobody can lock an account out from elsewhere. The address is the client's real
address only when `[admin] trusted_proxy_hops` matches the reverse proxies in front of the panel (otherwise
every visitor has the proxy's address and shares its count). Unknown emails are counted like known ones, so
the throttle reveals nothing about which accounts exist. A successful login clears its (account, address)
count; a restart clears everything.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

FREE_FAILURES = 4
ADDRESS_FREE_FAILURES = 20
ACCOUNT_ALARM = 20
FIRST_LOCKOUT = timedelta(seconds=30)
MAX_LOCKOUT = timedelta(minutes=15)
FORGET_AFTER = timedelta(hours=1)
MAX_ENTRIES = 10_000

Key = TypeVar("Key")


@dataclass
class _Failures:
    count: int
    last_at: datetime
    locked_until: datetime | None = None

    def lock(self, now: datetime, nth_lockout: int) -> None:
        lockout = min(FIRST_LOCKOUT * 2 ** (nth_lockout - 1), MAX_LOCKOUT)
        self.locked_until = max(self.locked_until or now, now + lockout)

    def wait(self, now: datetime) -> timedelta | None:
        if self.locked_until is None or self.locked_until <= now:
            return None
        return self.locked_until - now


def _bump(table: dict[Key, _Failures], key: Key, now: datetime) -> _Failures:
    if len(table) > MAX_ENTRIES:  # bound memory under a spray of made-up emails or addresses
        for stale in [k for k, v in table.items() if now - v.last_at >= FORGET_AFTER]:
            del table[stale]
    entry = table.get(key)
    if entry is None or now - entry.last_at >= FORGET_AFTER:
        entry = table[key] = _Failures(0, now)
    entry.count += 1
    entry.last_at = now
    return entry


class LoginThrottle:
    """Failed logins per (account, address), per address and per account; see the module's docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, str], _Failures] = {}
        self._addresses: dict[str, _Failures] = {}
        self._accounts: dict[str, _Failures] = {}

    def locked_for(self, account: str, address: str, now: datetime) -> timedelta | None:
        """How long this address must wait before trying this account again (None: go ahead)."""
        with self._lock:
            waits = [
                entry.wait(now)
                for entry in (self._pairs.get((account, address)), self._addresses.get(address))
                if entry is not None
            ]
        return max((w for w in waits if w is not None), default=None)

    def failed(self, account: str, address: str, now: datetime) -> None:
        with self._lock:
            pair = _bump(self._pairs, (account, address), now)
            by_address = _bump(self._addresses, address, now)
            by_account = _bump(self._accounts, account, now)
            if pair.count > FREE_FAILURES:
                pair.lock(now, pair.count - FREE_FAILURES)
            elif by_account.count > ACCOUNT_ALARM:
                pair.lock(now, pair.count)
            if by_address.count > ADDRESS_FREE_FAILURES:
                by_address.lock(now, by_address.count - ADDRESS_FREE_FAILURES)

    def succeeded(self, account: str, address: str) -> None:
        with self._lock:
            self._pairs.pop((account, address), None)
