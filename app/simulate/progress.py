"""The rich progress display of a simulation: one bar over all arms' rounds, and the current step."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class SimulationProgress:
    def __init__(self, console: Console, arms: list[str], rounds: int) -> None:
        self.progress = Progress(TextColumn("[bold]{task.fields[arm]}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("rounds"), TimeElapsedColumn(), TextColumn("{task.description}"),
                                 console=console, transient=False)
        self.job = self.progress.add_task("", total=len(arms) * rounds, arm=arms[0] if arms else "")

    def status(self, arm: str, text: str) -> None:
        self.progress.update(self.job, arm=arm, description=text)

    def advance(self) -> None:
        self.progress.advance(self.job)

    def __enter__(self) -> "SimulationProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.update(self.job, description="done")
        self.progress.stop()
