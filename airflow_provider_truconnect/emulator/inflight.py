"""Requests in flight, and the state generation each belongs to.

A request belongs to the generation of the state it arrived in. :meth:`EmulatorState.reset` starts a new generation;
from then on the requests of older ones change nothing: they consume no fault, create no order, are not counted and
are dropped instead of answered, whichever step they are at. The reset also wakes those that wait (a ``delay`` fault,
a body that never arrives, an answer whose headers never end) and then waits, bounded, until they are gone, so a
test's leftovers cannot reach the next test. Within a generation a request is counted before its answer is sent, so
a client that has read an answer always finds it in the stats.

Pauses are a test hook for the races this prevents: a request that reaches a pause point waits there until the next
reset (``until="reset"``) or an explicit release (``until="release"``).

* ``arrived``: the request has been parsed, nothing else has happened yet.
* ``answered``: the answer is decided (its status is known) but neither counted nor sent yet.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Literal, cast, get_args

from airflow_provider_truconnect.emulator.routes import FAULT_ROUTES

PausePoint = Literal["arrived", "answered"]
PauseUntil = Literal["reset", "release"]
PAUSE_POINTS: tuple[str, ...] = get_args(PausePoint)
PAUSE_UNTIL: tuple[str, ...] = get_args(PauseUntil)
DEFAULT_DRAIN_TIMEOUT = 5.0
DEFAULT_PAUSE_LIMIT = 60.0


class Ticket:
    """One request being served: its generation, and what wakes it while it waits."""

    __slots__ = ("generation", "route", "thread", "held", "_loop", "_woken", "_released", "_wake", "_release")

    def __init__(self, generation: int, route: str) -> None:
        """Create on the event loop that serves the request.

        :param generation: the state generation the request arrived in.
        :param route: its route key (template, ``token``, ``unmatched`` ...).
        """
        self.generation = generation
        self.route = route
        self.thread = threading.get_ident()
        self.held = False
        self._loop = asyncio.get_running_loop()
        # Events exist only once something waits: most requests never do, and each costs time on every request.
        self._woken = self._released = False
        self._wake: asyncio.Event | None = None
        self._release: asyncio.Event | None = None

    def _set(self, event: asyncio.Event | None) -> None:
        if event is None:
            return  # nobody waits yet; a later wait sees the flag
        try:
            self._loop.call_soon_threadsafe(event.set)
        except RuntimeError:
            pass  # the server's loop is closed: nobody is waiting any more

    def wake(self) -> None:
        """End this request's waits (thread-safe): its generation is over, or the server is stopping."""
        self._woken = True
        self._set(self._wake)

    def release(self) -> None:
        """End a ``until="release"`` pause (thread-safe)."""
        self._released = True
        self._set(self._release)

    async def wait(self, seconds: float | None, *, released: bool = False) -> bool:
        """Wait until woken (or released), at most ``seconds``. Call on the request's event loop.

        :param seconds: the longest wait; None waits until woken.
        :param released: wait for a release instead of a wake-up.
        :return: True when woken (or released), False when the time ran out.
        """
        if released:
            if self._release is None:
                self._release = asyncio.Event()
            event = self._release
        else:
            if self._wake is None:
                self._wake = asyncio.Event()
            event = self._wake
        # The flag is read after the event is in place: a wake-up from another thread either finds the event or has
        # already set the flag.
        if (self._released if released else self._woken) or event.is_set():
            return True
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return False
        return True


@dataclass
class Pause:
    """A pause point set for the next ``count`` requests of ``route``."""

    route: str
    point: PausePoint
    count: int
    until: PauseUntil
    limit: float


class InFlight:
    """Generation counter, live tickets and pauses. Thread-safe; the generation changes only with the state lock held,
    so a check of :meth:`is_current` under that lock cannot interleave with a reset."""

    def __init__(self) -> None:
        self.generation = 0
        self._cond = threading.Condition()
        self._tickets: set[Ticket] = set()
        self._pauses: list[Pause] = []
        self._paused = 0
        self._closed = False

    def begin(self, route: str) -> Ticket:
        """:param route: the request's route key. :return: its ticket (call on the serving event loop)."""
        ticket = Ticket(self.generation, route)
        with self._cond:
            self._tickets.add(ticket)
            if self._closed:
                ticket.wake()
            self._cond.notify_all()
        return ticket

    def end(self, ticket: Ticket) -> None:
        """:param ticket: a request that is completely done."""
        with self._cond:
            self._tickets.discard(ticket)
            self._cond.notify_all()

    def is_current(self, ticket: Ticket) -> bool:
        """:param ticket: a request. :return: whether it belongs to the current generation."""
        return ticket.generation == self.generation and not self._closed

    def next_generation(self) -> int:
        """Start a new generation (call with the state lock held): older requests are woken, pauses are dropped.

        :return: the new generation.
        """
        with self._cond:
            self.generation += 1
            self._pauses.clear()
            for ticket in self._tickets:
                ticket.wake()
            return self.generation

    def drain(self, timeout: float = DEFAULT_DRAIN_TIMEOUT) -> bool:
        """Wait until no request of an older generation is in flight, except those held by a ``release`` pause.

        Called on a thread that serves requests it returns at once: waiting there would stop them from finishing.

        :param timeout: the longest wait in seconds.
        :return: True when none is left.
        """
        me = threading.get_ident()
        with self._cond:

            def done() -> bool:
                old = [t for t in self._tickets if t.generation < self.generation and not t.held]
                return not old or any(t.thread == me for t in old)

            return self._cond.wait_for(done, timeout)

    def count(self) -> int:
        """:return: how many requests are being served."""
        with self._cond:
            return len(self._tickets)

    def wait_serving(self, count: int = 1, timeout: float = 10.0) -> int:
        """Wait until at least ``count`` requests are being served.

        :param count: how many.
        :param timeout: the longest wait in seconds.
        :return: how many are being served now.
        """
        with self._cond:
            self._cond.wait_for(lambda: len(self._tickets) >= count, timeout)
            return len(self._tickets)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is being served (every answer sent and recorded).

        :param timeout: the longest wait in seconds.
        :return: True when idle.
        """
        with self._cond:
            return self._cond.wait_for(lambda: not self._tickets, timeout)

    def close(self) -> None:
        """The server is stopping: wake and release every request, and every later one at once."""
        with self._cond:
            self._closed = True
            self._pauses.clear()
            for ticket in self._tickets:
                ticket.wake()
                ticket.release()
            self._cond.notify_all()

    # ------------------------------------------------------------------------------------------------------ pauses
    def add_pause(
        self,
        route: str = "*",
        point: str = "answered",
        count: int = 1,
        until: str = "reset",
        limit: float = DEFAULT_PAUSE_LIMIT,
    ) -> Pause:
        """Pause the next ``count`` requests of ``route`` at ``point``.

        :param route: a route key (as for faults) or ``*``.
        :param point: ``arrived`` or ``answered`` (see the module docstring).
        :param count: how many requests to pause.
        :param until: ``reset`` (the next reset wakes them) or ``release`` (only :meth:`release` does).
        :param limit: the longest a request stays paused, in seconds, in case nothing wakes it.
        :return: the pause.
        :raises ValueError: on a bad argument.
        """
        if route not in FAULT_ROUTES:
            raise ValueError(f"route {route!r} is not one of: {', '.join(sorted(FAULT_ROUTES))}")
        if point not in PAUSE_POINTS:
            raise ValueError(f"point must be one of {', '.join(PAUSE_POINTS)}, got {point!r}")
        if until not in PAUSE_UNTIL:
            raise ValueError(f"until must be one of {', '.join(PAUSE_UNTIL)}, got {until!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 < limit <= 3600:
            raise ValueError(f"limit must be a number of seconds in (0, 3600], got {limit!r}")
        pause = Pause(route, cast(PausePoint, point), count, cast(PauseUntil, until), float(limit))
        with self._cond:
            self._pauses.append(pause)
        return pause

    def release(self) -> int:
        """Release every request held by a ``release`` pause.

        :return: how many were released.
        """
        with self._cond:
            held = [t for t in self._tickets if t.held]
            for ticket in held:
                ticket.release()
            return len(held)

    def wait_paused(self, count: int = 1, timeout: float = 10.0) -> int:
        """Wait until at least ``count`` requests are paused.

        :param count: how many.
        :param timeout: the longest wait in seconds.
        :return: how many are paused now (fewer than ``count`` when the time ran out).
        """
        with self._cond:
            self._cond.wait_for(lambda: self._paused >= count, timeout)
            return self._paused

    async def checkpoint(self, ticket: Ticket, point: PausePoint) -> None:
        """Pause here if a pause matches this request.

        :param ticket: the request.
        :param point: where it is.
        """
        if not self._pauses:
            return
        with self._cond:
            pause = next((p for p in self._pauses if p.point == point and p.route in ("*", ticket.route)), None)
            if pause is None or ticket.generation != self.generation:
                return
            pause.count -= 1
            if pause.count == 0:
                self._pauses.remove(pause)
            self._paused += 1
            ticket.held = pause.until == "release"
            self._cond.notify_all()
        try:
            await ticket.wait(pause.limit, released=ticket.held)
        finally:
            with self._cond:
                self._paused -= 1
                ticket.held = False
                self._cond.notify_all()
