"""Preemption notices (SIGTERM): stop a run at a step every host agrees on, then save it."""

from __future__ import annotations

import signal

import jax


class Preemption:
    """A preemption notice (SIGTERM) stops the loop at a step every host agrees on.

    One process: a SIGTERM handler sets a flag, read after each step. Several processes
    (``jax.distributed``): the notice reaches the hosts at different steps, and a host that saved
    and left while another entered the next step would leave both waiting for ever. JAX's
    preemption service (on by default with ``jax.distributed``) catches SIGTERM itself, tells the
    coordinator, and ``multihost_utils.reached_preemption_sync_point(step)`` becomes true on
    every host at the same step: no collective per step. Our own handler is then not installed,
    as it would replace the service's."""

    def __init__(self):
        self.requested = False
        self._service = False
        self._previous = None
        if jax.process_count() > 1:
            from jax._src import distributed

            self._service = distributed.global_state.preemption_sync_manager is not None
        if not self._service:
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    @property
    def how(self) -> str:
        return (" (step agreed by every host through JAX's preemption service)"
                if self._service else "")

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def reached(self, step: int) -> bool:
        """Whether to save and stop after ``step``: the same answer on every process."""
        if self._service:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        if jax.process_count() == 1:
            return self.requested
        # Several processes without the preemption service (jax_enable_preemption_service
        # off): agree with a collective every step.
        import numpy as np
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.int32(self.requested))))
