"""What may stop a run from outside, and the heartbeat that tells the others it is alive."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from app.runs.lifecycle import update_owned
from app.db.tables import utcnow

log = logging.getLogger(__name__)


@dataclass
class RunControl:
    """The worker shutting down (`stop`), or the heartbeat finding the run taken away (`lost`)."""

    stop: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> bool:
        return self.stop.is_set() or self.lost.is_set()


class Heartbeat(threading.Thread):
    """Stamps the run's heartbeat every `interval`; sets `lost` once the run is no longer ours.

    Clocks: heartbeats are stamped by each worker's clock, so keep workers' clocks in sync (NTP)."""

    def __init__(self, factory: sessionmaker[Session], run_id: int, worker_id: str, interval: float,
                 lost: threading.Event) -> None:
        super().__init__(name=f"heartbeat-{run_id}", daemon=True)
        self.factory, self.run_id, self.worker_id, self.interval, self.lost = factory, run_id, worker_id, interval, lost
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                if not update_owned(self.factory, self.run_id, self.worker_id, heartbeat_at=utcnow()):
                    self.lost.set()
                    return
            except Exception:  # a DB blip: the next beat tries again; the reaper's timeout is the judge
                log.warning("heartbeat for run %s failed", self.run_id, exc_info=True)

    def stop(self) -> None:
        self._done.set()
        self.join()
