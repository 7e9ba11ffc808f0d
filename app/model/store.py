"""The model store: one directory per version, written atomically and content-hashed.

A version directory holds `flywheel.json` (labels, kind, how to rebuild the encoder),
`head.safetensors`, the tokenizer and either the full encoder (`encoder/`) or, for LoRA,
only the adapter weights plus the path of the version that holds the base encoder.
It is written under a temporary name and renamed into place, so a reader never sees a
half-written version; every file and directory is fsynced before the rename and the store's
directory after it, so a version the database names survives a power cut.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from app.model.encoder import EncoderWithHead, auto_encoder

META_FILE = "flywheel.json"
HEAD_FILE = "head.safetensors"
FORMAT = 1


@dataclass
class VersionMeta:
    task: str
    kind: str
    labels: list[str]
    encoder: dict[str, Any]  # {"kind": "full"} or {"kind": "lora", "base": "<dir of a full version>"}
    base_model: str
    max_seq_len: int = 128
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **self.__dict__}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VersionMeta":
        data = {k: v for k, v in data.items() if k != "format"}
        return cls(**data)


ENGINES_DIR = "engines"  # inference engines made from a version later (ONNX files); each has its own sha256


def directory_sha256(path: Path) -> str:
    """Hash of every file's relative name and bytes, in sorted order (the model as trained: the
    `engines/` made from it afterwards are hashed one by one, in the version's engine record)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.relative_to(path).parts[0] != ENGINES_DIR):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


BuildModel = Callable[[torch.nn.Module, "VersionMeta"], EncoderWithHead]  # (encoder, meta) -> model to load into


def save_version(model: EncoderWithHead, tokenizer: Any, meta: VersionMeta, root: Path, name: str) -> tuple[Path, str]:
    """Write a version under `root/<name>-<sha12>`; returns (final path, sha256)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        encoder = model.encoder
        if meta.encoder["kind"] == "lora":
            encoder.save_pretrained(tmp / "adapter")  # a PeftModel saves only its adapters
        else:
            encoder.save_pretrained(tmp / "encoder", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "tokenizer")
        head = {k: v.detach().float().cpu().contiguous() for k, v in model.head.state_dict().items()}
        save_file(head, str(tmp / HEAD_FILE))
        (tmp / META_FILE).write_text(json.dumps(meta.to_json(), indent=2))
        for f in tmp.rglob("*"):
            if f.is_file():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
        for d in sorted((p for p in tmp.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            fsync_dir(d)
        fsync_dir(tmp)
        sha = directory_sha256(tmp)
        final = root / f"{name}-{sha[:12]}"
        if final.exists():  # identical content already stored
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
            fsync_dir(root)
        return final, sha
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class CorruptVersion(Exception):
    """A version's files are missing or are not the ones recorded when it was stored."""


def verify_version(path: Path, sha256: str | None, what: str) -> None:
    """The version's directory exists and hashes to the sha256 recorded for it; CorruptVersion
    naming `what` otherwise.  Checked before anything is loaded from it, for serving or training."""
    if not path.is_dir():
        raise CorruptVersion(f"{what}: {path} is missing")
    if sha256 and directory_sha256(path) != sha256:
        raise CorruptVersion(f"{what}: the files in {path} do not match the sha256 recorded when it was stored")


def dir_bytes(path: Path) -> int:
    """Bytes of every file under `path` (0 if it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (created, renamed) durable, not only the files' bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_meta(path: Path) -> VersionMeta:
    return VersionMeta.from_json(json.loads((path / META_FILE).read_text()))


def load_version(path: Path, *, build: BuildModel, device: torch.device, trainable_lora: bool = False
                 ) -> tuple[EncoderWithHead, Any, VersionMeta]:
    """Rebuild a stored version: `build` (the task kind's) puts the head on the encoder, then the
    head's weights are loaded.  LoRA adapters are merged for serving unless training goes on."""
    meta = read_meta(path)
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    encoder: torch.nn.Module
    if meta.encoder["kind"] == "lora":
        from peft import PeftModel

        base_dir = Path(meta.encoder["base"])
        adapted = PeftModel.from_pretrained(auto_encoder(base_dir / "encoder"), path / "adapter",
                                            is_trainable=trainable_lora)
        encoder = adapted if trainable_lora else adapted.merge_and_unload()
    else:
        encoder = auto_encoder(path / "encoder")
    model = build(encoder, meta)
    model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
    model.to(device)
    model.eval()
    return model, tokenizer, meta
