"""Schedules for loss hyper-parameters that change during training."""
import logging
import math

logger = logging.getLogger(__name__)


class CosineTemperatureScheduler:
    """Softmax temperature annealed along half a cosine.

    ``get_temperature(step)`` is ``initial_temp`` at step 0, the midpoint of the two at
    ``total_steps / 2`` and ``final_temp`` at ``total_steps`` and every later step.
    Steps are optimizer steps (0-based). ``total_steps`` None leaves the length to
    ``set_total_steps`` (the engine passes the run's optimizer steps); the schedule cannot be
    read before. The scheduler remembers the last step it was set to (``set_step``) so that
    ``state_dict``/``load_state_dict`` let a resumed run continue the schedule it started with.
    """

    def __init__(self, initial_temp: float = 0.1, final_temp: float = 0.01, total_steps: int | None = None):
        if initial_temp <= 0 or final_temp <= 0:
            raise ValueError(
                f"CosineTemperatureScheduler: temperatures must be > 0, "
                f"got initial_temp={initial_temp}, final_temp={final_temp}")
        self.initial_temp = float(initial_temp)
        self.final_temp = float(final_temp)
        self.total_steps = None
        if total_steps is not None:
            self.set_total_steps(total_steps)
        self.current_step = 0

    def set_total_steps(self, total_steps):
        """Set the schedule's length in optimizer steps (>= 1)."""
        if total_steps < 1:
            raise ValueError(f"CosineTemperatureScheduler: total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)

    def get_temperature(self, step):
        """Temperature at optimizer step ``step`` (a pure function of ``step``)."""
        if step < 0:
            raise ValueError(f"CosineTemperatureScheduler: step must be >= 0, got {step}")
        if self.total_steps is None:
            raise RuntimeError("CosineTemperatureScheduler: total_steps is not set; pass it or call "
                               "set_total_steps() first")
        progress = min(step, self.total_steps) / self.total_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.final_temp + (self.initial_temp - self.final_temp) * cosine

    def set_step(self, step):
        """Record ``step`` as the current step and return its temperature."""
        temperature = self.get_temperature(step)
        self.current_step = int(step)
        return temperature

    @property
    def temperature(self):
        """Temperature at the current step."""
        return self.get_temperature(self.current_step)

    def state_dict(self):
        return {'initial_temp': self.initial_temp, 'final_temp': self.final_temp,
                'total_steps': self.total_steps, 'current_step': self.current_step}

    def load_state_dict(self, state):
        """Restore a schedule saved by ``state_dict``; the saved schedule wins over the constructor's."""
        expected = set(self.state_dict())
        if set(state) != expected:
            raise KeyError(f"CosineTemperatureScheduler state must have keys {sorted(expected)}, "
                           f"got {sorted(state)}")
        mine = self.state_dict()
        changed = {k: (mine[k], state[k]) for k in ('initial_temp', 'final_temp', 'total_steps')
                   if mine[k] != state[k]}
        if changed:
            logger.warning("Temperature schedule from the checkpoint replaces the configured one "
                           "(configured, saved): %s", changed)
        self.initial_temp = float(state['initial_temp'])
        self.final_temp = float(state['final_temp'])
        self.total_steps = None if state['total_steps'] is None else int(state['total_steps'])
        self.current_step = int(state['current_step'])
