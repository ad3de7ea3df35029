"""Resizes a whole image folder once, offline, so training never resizes (or decodes big files).

    .venv/bin/python scripts/resize_images.py SRC DST --size 64 [64] [--format png] [--workers 2]

The tree under SRC (``train/<class>/...`` and so on) is mirrored under DST with every image
resized to ``--size`` (H W). Paying this once beats paying it every epoch in every worker; the
model then sees exactly the same pixels each epoch, and ``data.image_size`` can equal the new
size so the loader's resize becomes a no-op. Unreadable files are reported and skipped; files
already in DST and newer than their source are left alone, so a rerun only does new work.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from lightspeed.data.image_folder import list_images

RESIZED, UP_TO_DATE = "resized", "up to date"


def resize_one(job: tuple[Path, Path, tuple[int, int], str | None]) -> str:
    """Resizes one file; returns ``RESIZED``, ``UP_TO_DATE`` (left alone) or, for an unreadable
    file, its error line."""
    from PIL import Image, UnidentifiedImageError

    src, dst, size, mode = job
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return UP_TO_DATE
    try:
        with Image.open(src) as im:
            im = (
                im.convert(mode)
                if mode
                else im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode)
            )
            out = im.resize((size[1], size[0]), Image.Resampling.LANCZOS)
        dst.parent.mkdir(parents=True, exist_ok=True)
        out.save(dst)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        return f"{src}: {e}"
    return RESIZED


def plan(src: Path, dst: Path, size: tuple[int, int], fmt: str | None, mode: str | None) -> list:
    jobs = []
    for p in list_images(src):
        target = dst / p.relative_to(src)
        if fmt:
            target = target.with_suffix("." + fmt)
        jobs.append((p, target, size, mode))
    return jobs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--size", type=int, nargs="+", required=True, help="H [W]")
    ap.add_argument("--format", choices=["png", "jpg", "webp"], help="re-encode (default: keep)")
    ap.add_argument("--mode", choices=["L", "RGB"], help="convert to grayscale or RGB")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    if not args.src.is_dir():
        print(f"resize_images: error: {args.src} is not a folder", file=sys.stderr)
        return 2
    if args.src.resolve() == args.dst.resolve():
        print(
            "resize_images: error: DST must differ from SRC (originals are kept)", file=sys.stderr
        )
        return 2
    size = (args.size[0], args.size[-1])
    jobs = plan(args.src, args.dst, size, args.format, args.mode)
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            outcomes = list(pool.map(resize_one, jobs, chunksize=64))
    else:
        outcomes = [resize_one(job) for job in jobs]
    errors = [o for o in outcomes if o not in (RESIZED, UP_TO_DATE)]
    for e in errors:
        print(f"skipped {e}", file=sys.stderr)
    kept = outcomes.count(UP_TO_DATE)
    print(
        f"{outcomes.count(RESIZED)} images resized to {size[0]}x{size[1]} in {args.dst}; "
        + (f"{kept} already up to date; " if kept else "")
        + f"{len(errors)} unreadable"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
