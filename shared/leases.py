"""A heartbeat that keeps a short claim alive while its work runs.

Claims are short (``shared.budgets.CLAIM_LEASE_S``) so that a killed worker's work is resumed
within a minute or two; a live worker renews its claim every ``HEARTBEAT_INTERVAL_S`` from a
daemon thread. ``renew()`` is the claim's own conditional write (only the owner may extend it)
and returns False when the claim is no longer ours: the heartbeat then stops and
:attr:`Heartbeat.lost` tells the work, which must not record anything unconditionally anyway.
A heartbeat also stops after ``max_hold_s``, so a hung (not dead) worker cannot keep a claim
forever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

from shared.budgets import HEARTBEAT_INTERVAL_S
from shared.logging import get_logger

log = get_logger("sftpipe.leases")


class Heartbeat:
    """``with Heartbeat(renew, max_hold_s=...):`` renews the claim until the block ends."""

    def __init__(
        self,
        renew: Callable[[], bool],
        *,
        max_hold_s: float,
        interval_s: float = HEARTBEAT_INTERVAL_S,
        what: str = "claim",
    ) -> None:
        self._renew = renew
        self._max_hold_s = max_hold_s
        self._interval_s = interval_s
        self._what = what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False
        self.renewals = 0

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self._what}", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval_s)

    def _beat(self) -> None:
        deadline = time.monotonic() + self._max_hold_s
        while not self._stop.wait(self._interval_s):
            if time.monotonic() > deadline:
                log.warning("work outlived its worst case: the %s is no longer renewed", self._what)
                return
            try:
                still_ours = self._renew()
            except Exception:  # a failed renewal is retried at the next beat; the lease is 4 beats
                log.warning("could not renew the %s", self._what, exc_info=True)
                continue
            if not still_ours:
                self.lost = True
                log.warning("the %s was taken over: heartbeat stopped", self._what)
                return
            self.renewals += 1
