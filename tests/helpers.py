"""Small data makers shared by the tests (one place, as detectron2's utils/testing.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_voc_xml(path: Path, filename: str, width: int, height: int, objects: list[dict]) -> None:
    """Write a VOC annotation. ``objects``: dicts with name, box (1-based inclusive), difficult."""
    objs = []
    for o in objects:
        x1, y1, x2, y2 = o["box"]
        objs.append(
            f"<object><name>{o['name']}</name><pose>Unspecified</pose>"
            f"<truncated>{int(o.get('truncated', 0))}</truncated><difficult>{int(o.get('difficult', 0))}</difficult>"
            f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    path.write_text(
        f"<annotation><folder>VOC</folder><filename>{filename}</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        + "".join(objs)
        + "</annotation>"
    )


def write_random_proposals(run: Path, ds, n: int = 25, seed: int = 0) -> Path:
    """A proposals file of ``n`` random small boxes per image of ``ds`` in ``run``."""
    rng = np.random.default_rng(seed)
    boxes = {}
    for r in ds:
        xy = rng.uniform(0, [r.width - 20, r.height - 20], (n, 2))
        boxes[r.image_id] = np.concatenate([xy, xy + rng.uniform(5, 19, (n, 2))], 1).astype(np.float32)
    return write_run_proposals(run, ds, boxes)


def write_run_proposals(run: Path, ds, boxes: dict) -> Path:
    """``RUN/proposals/<split>.h5`` holding ``boxes`` (``{image_id: (N, 4)}``) for every image of ``ds``."""
    from spp_detect.proposals.store import dataset_stamp, write_proposals

    path = Path(run) / "proposals" / f"{ds.split}.h5"
    return write_proposals(path, ds.image_ids, [boxes[i] for i in ds.image_ids], dict(dataset_stamp(ds), params={}))


def jittered_proposals(ds, n=40, seed=0):
    """Windows around the ground truth (so there are foreground windows) plus random ones."""
    rng = np.random.default_rng(seed)
    out = {}
    for r in ds:
        boxes = []
        for b in r.boxes:
            w, h = b[2] - b[0] + 1, b[3] - b[1] + 1
            for _ in range(6):
                d = rng.normal(0, 0.08, 4) * [w, h, w, h]
                boxes.append(b + d)
        xy = rng.uniform(0, [r.width - 10, r.height - 10], (n, 2))
        boxes += list(np.concatenate([xy, xy + rng.uniform(8, 50, (n, 2))], 1))
        boxes = np.clip(np.array(boxes), 0, [r.width - 1, r.height - 1, r.width - 1, r.height - 1])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        out[r.image_id] = boxes.astype(np.float32)
    return out


def make_voc_tree(
    root: Path,
    classes: tuple[str, ...] = ("circle", "square"),
    n_images: int = 4,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    splits: dict[str, list[int]] | None = None,
) -> Path:
    """A tiny VOC-style folder with random images, one or two objects each, and a classes.txt."""
    import cv2

    rng = np.random.default_rng(seed)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    h, w = size
    ids = []
    for i in range(n_images):
        image_id = f"{i:06d}"
        ids.append(image_id)
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), img)
        objects = []
        for k in range(1 + i % 2):
            x1, y1 = int(rng.integers(1, w // 2)), int(rng.integers(1, h // 2))
            x2, y2 = int(rng.integers(x1 + 5, w)), int(rng.integers(y1 + 5, h))
            objects.append({"name": classes[(i + k) % len(classes)], "box": (x1, y1, x2, y2), "difficult": int(k == 1 and i == 3)})
        write_voc_xml(root / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", w, h, objects)
    splits = splits or {"train": list(range(n_images // 2)), "test": list(range(n_images // 2, n_images)), "trainval": list(range(n_images))}
    for name, idx in splits.items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{ids[i]}\n" for i in idx))
    return root
