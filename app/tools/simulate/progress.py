"""The progress display of a simulation.

On a terminal: rich's live bar over all arms' rounds (of every seed), with the current step.
Anywhere else (a log file, CI): plain lines, since a live bar there is either nothing or a
flood of control codes: one line per change of step at most every `interval_s` seconds (a new
arm or seed is always shown), and one line per finished round with its test accuracy.
"""

from __future__ import annotations

import time
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.tools.simulate.result import RoundResult

PLAIN_INTERVAL_S = 5.0


def round_text(label: str, done: RoundResult, rounds: int) -> str:
    """'feedback seed 1 round 2/4: test accuracy 0.812 (gate P, 3 corrections)'."""
    extra = f", {done.sent.corrections} corrections" if done.sent.corrections else ""
    return (f"{label} round {done.round}/{rounds}: test accuracy {done.accuracy:.3f} "
            f"(gate {done.gate.letter}{extra})")


class SimulationProgress:
    """The live bar, for a terminal."""

    def __init__(self, console: Console, arms: list[str], rounds: int, seeds: int = 1) -> None:
        self.rounds = rounds
        self.progress = Progress(TextColumn("[bold]{task.fields[arm]}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("rounds"), TimeElapsedColumn(), TextColumn("{task.description}"),
                                 console=console, transient=False)
        self.job = self.progress.add_task("", total=len(arms) * rounds * seeds, arm=arms[0] if arms else "")

    def status(self, arm: str, text: str) -> None:
        self.progress.update(self.job, arm=arm, description=text)

    def round_done(self, arm: str, done: RoundResult | None) -> None:
        """One round finished (None: a round of an arm that is not run again)."""
        self.progress.advance(self.job)

    def __enter__(self) -> "SimulationProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.update(self.job, description="done")
        self.progress.stop()


class PlainProgress:
    """Plain lines, for a log file or CI."""

    def __init__(self, console: Console, arms: list[str], rounds: int, seeds: int = 1, *,
                 interval_s: float = PLAIN_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.rounds, self.interval_s, self.clock = console, rounds, interval_s, clock
        self.total = len(arms) * rounds * seeds
        self.done = 0
        self.started = clock()
        self.last_at: float | None = None
        self.last_arm: str | None = None
        self.last_text: str | None = None

    def _line(self, text: str) -> None:
        elapsed = self.clock() - self.started
        self.console.print(f"[{elapsed:7.1f}s] {text}", markup=False, highlight=False, soft_wrap=True)

    def status(self, arm: str, text: str) -> None:
        now = self.clock()
        if arm == self.last_arm and text == self.last_text:
            return
        new_arm = arm != self.last_arm
        if not new_arm and self.last_at is not None and now - self.last_at < self.interval_s:
            return
        self.last_at, self.last_arm, self.last_text = now, arm, text
        self._line(f"{arm}: {text}")

    def round_done(self, arm: str, done: RoundResult | None) -> None:
        self.done += 1
        if done is not None:
            self._line(f"{round_text(arm, done, self.rounds)} [{self.done}/{self.total} rounds]")

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc and exc[0] is None:
            self._line(f"done: {self.done}/{self.total} rounds")


def make_progress(console: Console, arms: list[str], rounds: int, seeds: int = 1) -> SimulationProgress | PlainProgress:
    """The live bar on a terminal, plain lines anywhere else."""
    if console.is_terminal:
        return SimulationProgress(console, arms, rounds, seeds)
    return PlainProgress(console, arms, rounds, seeds)
