"""Process-wide knobs for torch and transformers, set once at start-up."""

from __future__ import annotations

import logging
import os

from app.core.config import Settings


def configure_runtime(settings: Settings) -> None:
    # Nothing may download at run time: the base model is a local path or already cached.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("httpx").setLevel(logging.WARNING)
