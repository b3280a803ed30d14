"""Small Omniglot-shaped archives built by the tests (never downloaded)."""
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from metadapt.datasets.archives import file_digests


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.ones((105, 105), dtype=bool)
    pixels[rng.integers(0, 90):, rng.integers(0, 90):][:15, :15] = False  # a black square stroke
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def make_archives(root: Path, alphabets=2, characters=3, drawers=6, extra_entries=()) -> dict:
    """images_background.zip / images_evaluation.zip and Vinyals-style split files; returns the
    ``checksums`` argument that accepts them."""
    root.mkdir(parents=True, exist_ok=True)
    seed, lines = 0, {"train": [], "val": [], "test": [], "trainval": []}
    for archive in ("images_background", "images_evaluation"):
        with zipfile.ZipFile(root / f"{archive}.zip", "w") as zf:
            for a in range(alphabets):
                for c in range(characters):
                    name = f"{archive[7:]}Alpha{a}/character{c + 1:02d}"
                    for d in range(drawers):
                        seed += 1
                        zf.writestr(f"{archive}/{name}/{seed:04d}_{d + 1:02d}.png", png(seed))
                    subset = "test" if archive == "images_evaluation" else ("val" if c == 0 else "train")
                    for rot in ("rot000", "rot090", "rot180", "rot270"):
                        lines[subset].append(f"{name}/{rot}")
                        if subset != "test":
                            lines["trainval"].append(f"{name}/{rot}")
            for entry, data in extra_entries:
                zf.writestr(entry, data)
    splits = root / "splits" / "vinyals"
    splits.mkdir(parents=True, exist_ok=True)
    for subset, names in lines.items():
        (splits / f"{subset}.txt").write_text("\n".join(names) + "\n")
    return {f"{a}.zip": [{"sha256": file_digests(root / f"{a}.zip")["sha256"]}]
            for a in ("images_background", "images_evaluation")}
