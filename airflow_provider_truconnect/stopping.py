"""Stopping a try when Airflow asks the task to stop.

On ``SIGTERM`` (a deploy, a pod eviction, ``airflow tasks`` being told to stop) Airflow 3.3.2's task runner calls the
operator's ``on_kill()`` and then lets the try carry on (apache/airflow#73006), so a try blocked on a slow answer keeps
running until the ``SIGKILL`` that ends the grace period. :class:`StopOnKill` raises from ``on_kill()`` while the task
is running, which interrupts the blocking call at once: the try fails like any failed try (retries apply), and
whatever was in flight is handled by the next try (an order request in flight stays recorded as sent, so the next try
refuses to place it again).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow.providers.common.compat.sdk import AirflowException


class StopOnKill:
    """Mixin for operators: ``with self.running(): ...`` around the work that ``on_kill()`` may interrupt."""

    _running = False

    @contextmanager
    def running(self) -> Iterator[None]:
        """Mark the work that a stop request interrupts."""
        self._running = True
        try:
            yield
        finally:
            self._running = False

    def on_kill(self) -> None:
        """Stop the running try by raising in the signal handler's thread (the task's main thread).

        Airflow also calls ``on_kill()`` after ``execution_timeout`` has already ended the work; then nothing is
        running and nothing is raised.

        :raises AirflowException: when called while the task is running.
        """
        if self._running:
            self._running = False
            raise AirflowException(
                "The task was told to stop (SIGTERM: a deploy, an eviction or a kill request) and stops now; a "
                "request in flight is treated as sent, so the next try checks what it did before sending anything"
            )
