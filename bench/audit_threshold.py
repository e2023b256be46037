"""Where to put the audit's near-duplicate threshold: cosine similarity of perturbed copies
against that of different samples of one kind, on data the audit benchmark does not score.

Images (efficientnet_lite0): scikit-image's bundled photos (four 128 px quarter crops of each:
different pictures of one scene), 100 LFW faces (25 px, one class of look-alikes) and 100
scikit-learn digits (10 per digit: different drawings of one class). Each base image gets the
copies bench/audit.py injects (resize 80 %, JPEG q60, 5 % crop, colour shift) and one with all
four. Texts (minilm): sentiment/yelp.txt (bench/audit.py scores amazon.txt), 300 sentences with a
case change, a punctuation change, a dropped word, and all three.

Similarity is the audit's own (signed square root, then L2 normalisation: data_audit/similarity.py).
The table gives, per threshold, the share of copies at or above it (recall) and the share of
pairs of different samples at or above it (false alarms); for images also when the pixels must
agree too (data_audit/pixels.py), as the audit requires. The audit takes the lowest threshold of
the grid at which no pair of different photos or faces (images) or different yelp sentences
(texts) passes.

    .venv/bin/python bench/audit_threshold.py --data ../shared/data
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import emit, machine, parser, quiet
from _injection import IMAGE_CHANGES, TEXT_CHANGES, change_image, change_text
from PIL import Image

import headstart as hs
from headstart.backbones import build_backbone
from headstart.data_audit.pixels import AGREEMENT, pixel_agreement, thumbnails
from headstart.data_audit.similarity import unit_rows
from headstart.features import extract_features

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "camera",
          "coins", "moon", "grass", "gravel", "brick", "clock", "cell", "page", "colorwheel", "horse")


def base_images() -> dict[str, list[Image.Image]]:
    """Groups of different images of one kind: whole photos, quarter crops of them, faces, digits."""
    import skimage.data
    from sklearn.datasets import load_digits

    photos = []
    for name in PHOTOS:
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        scale = 160 / min(photo.size)
        photos.append(photo.resize((round(photo.width * scale), round(photo.height * scale))))
    crops = []
    for photo in photos:
        big = photo.resize((round(photo.width * 1.6), round(photo.height * 1.6)))
        crops += [big.crop((x, y, x + 128, y + 128)) for x in (0, 128) for y in (0, 128)]
    faces = [Image.fromarray((face * 255).astype(np.uint8)).convert("RGB").resize((100, 100))
             for face in skimage.data.lfw_subset()[:100]]
    digits = load_digits()
    picked = [np.flatnonzero(digits.target == d)[:10] for d in range(10)]
    drawings = [Image.fromarray((255 - digits.images[i] * 16).clip(0, 255).astype(np.uint8)).convert("RGB")
                .resize((64, 64), Image.Resampling.NEAREST) for group in picked for i in group]
    return {"photos": photos, "photo crops": crops, "faces": faces, "digits": drawings}


def features_of(model: str, data: hs.LabelledData, cache: str) -> np.ndarray:
    return extract_features(build_backbone(model), data, cache_dir=cache, num_workers=0)


def image_study(folder: Path, cache: str, rng: random.Random) -> list[dict]:
    rows = []
    for kind, images in base_images().items():
        paths, copies = [], {change: [] for change in (*IMAGE_CHANGES, "all")}
        for i, image in enumerate(images):
            paths.append(str(folder / f"{kind}-{i}.png"))
            image.save(paths[-1])
            for change, listed in copies.items():
                listed.append(str(folder / f"{kind}-{i}-{change}.png"))
                change_image(image, change, rng).save(listed[-1])
        rows += compare(kind, "efficientnet_lite0", "image", paths, copies, cache)
    return rows


def text_study(data_root: Path, cache: str, rng: random.Random) -> list[dict]:
    texts = list(dict.fromkeys(hs.TextTable(data_root / "sentiment" / "yelp.txt").items))
    base = rng.sample(texts, 300)
    copies = {change: [change_text(t, change, rng) for t in base] for change in (*TEXT_CHANGES, "all")}
    return compare("yelp sentences", "minilm", "text", texts, copies, cache, base_items=base)


GRID = (0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96)


def shares(kind: str, pairs: str, values: np.ndarray) -> dict:
    return {"kind": kind, "pairs": pairs, "n": int(values.size), "min": float(values.min()),
            "max": float(values.max()), "at_or_above": {t: float((values >= t).mean()) for t in GRID}}


def compare(kind: str, model: str, modality: str, items: list[str], copies: dict[str, list[str]], cache: str,
            base_items: list[str] | None = None) -> list[dict]:
    """Per change: similarity of each copy to its original; and of every pair of different bases."""
    everything = list(items) + [c for listed in copies.values() for c in listed]
    unit = unit_rows(features_of(model, hs.LabelledData(modality, everything), cache))
    bases = unit[:len(items)]
    similarities = bases @ bases.T
    if modality == "text":  # sentences that are the same after lowercasing are copies, not different texts
        lowered = np.array([t.lower() for t in items])
        similarities[lowered[:, None] == lowered[None, :]] = -1
    upper = np.triu_indices(len(items), 1)
    rows = [shares(kind, "different", similarities[upper])]
    pixels = {path: thumbnails(Image.open(path)) for path in everything} if modality == "image" else None
    if pixels:  # pairs the pixels confirm keep their similarity; the others drop out (-1)
        agree = np.array([[pixel_agreement(pixels[a], pixels[b]) for b in items] for a in items])
        rows.append(shares(kind, "different, pixels agreeing", np.where(agree >= AGREEMENT, similarities, -1)[upper]))
    originals = bases if base_items is None else unit[[items.index(b) for b in base_items]]
    offset = len(items)
    for change, listed in copies.items():
        own = (unit[offset:offset + len(listed)] * originals).sum(1)
        offset += len(listed)
        rows.append(shares(kind, f"copy: {change}", own))
        if pixels:
            agree = np.array([pixel_agreement(pixels[a], pixels[b]) for a, b in zip(items, listed)])
            rows.append(shares(kind, f"copy: {change}, pixels agreeing", np.where(agree >= AGREEMENT, own, -1)))
    return rows


def chosen(rows: list[dict], negatives: tuple[str, ...]) -> float:
    """The lowest threshold of the grid that no pair of different samples of ``negatives`` reaches."""
    clean = [t for t in GRID if all(r["at_or_above"][t] == 0 for r in rows
                                    if r["kind"] in negatives and r["pairs"] == "different")]
    return min(clean) if clean else GRID[-1]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    args = p.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "images"
        folder.mkdir()
        rows = image_study(folder, str(Path(work) / "cache"), rng)
        rows += text_study(args.data, str(Path(work) / "cache"), rng)
    thresholds = {"image": chosen(rows, ("photos", "faces")), "text": chosen(rows, ("yelp sentences",))}
    emit(args.json, {"benchmark": "audit_threshold", "machine": machine(args.threads), "rows": rows,
                     "thresholds": thresholds},
         "Share of pairs at or above each cosine threshold: copies (recall) and different samples (false alarms)",
         ("kind", "pairs", "n", "min", "max", *(f">={t}" for t in GRID)),
         [(r["kind"], r["pairs"], r["n"], f"{r['min']:.3f}", f"{r['max']:.3f}",
           *(f"{r['at_or_above'][t]:.4f}" for t in GRID)) for r in rows],
         [(f"lowest threshold no different pair reaches: images {thresholds['image']} (photos, faces), "
           f"texts {thresholds['text']} (yelp); 'pixels agreeing' rows: pairs whose grey thumbnails also agree "
           f">= {AGREEMENT} (data_audit/pixels.py), the others counted below every threshold")])


if __name__ == "__main__":
    main()
