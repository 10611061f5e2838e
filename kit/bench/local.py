"""The matcher's speed, for `python scripts/bench.py match`: feature extraction (images/s) and
verified matching (pairs/s) per extractor on a competition's photos, one thread and all cores, and
what a Kaggle-2019-sized pass would take (25,361 train + 7,960 test photos to extract; 7,960 queries
x 50 identities x 3.1 photos each, the 2019 train's known photos per identity, to verify), projected
to 2 and 16 cores from the rate per core measured with every core busy (as if it scaled linearly
from there). OpenCV and BLAS run one thread per matching thread, as match.py runs them."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from kit.bench import Table
from kit.data.competition import load_competition
from kit.data.crops import image_keys
from kit.io import cpu_count
from kit.local.features import FeatureSpec, extract, load_crop
from kit.local.match import MatchCfg, inliers, matching_vectors, one_thread_each

KAGGLE_PHOTOS = 25_361 + 7_960
KAGGLE_PAIRS = 7_960 * 50 * (25_361 - 9_664) / 5_004  # queries x identities x known photos per identity
IMAGES, QUERIES, GALLERY = 120, 96, 50


def _rate(work, items: list, threads: int) -> float:
    """Items per second of `work` over `items` on a pool of `threads`."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        count = sum(pool.map(work, items))
    return count / (time.perf_counter() - start)


def bench_match(data: str) -> list[Table]:
    comp = load_competition(data)
    keys, paths, boxes = image_keys(comp)
    rng = np.random.default_rng(0)
    picked = rng.choice(len(keys), min(IMAGES, len(keys)), replace=False)
    cores = cpu_count()
    tables = []
    with one_thread_each():  # one item a thread, as the cache and the member run them
        for extractor in ("sift", "orb"):
            spec = FeatureSpec(extractor=extractor, use_boxes=comp.boxes is not None)
            crops = [load_crop(paths[i], boxes[i], spec) for i in picked]
            feats = [extract(c, spec) for c in crops]  # warm-up, and the features to match
            extract_1 = _rate(lambda c: (extract(c, spec), 1)[1], crops, 1)
            extract_n = _rate(lambda c: (extract(c, spec), 1)[1], crops, cores)
            vecs = [(xy, matching_vectors(d, extractor)) for xy, d in feats]
            work = [(vecs[q], [vecs[(q + 1 + g) % len(vecs)] for g in range(GALLERY)]) for q in range(QUERIES)]

            def match(item) -> int:
                (xy, vec), gallery = item
                inliers(xy, vec, gallery, extractor, MatchCfg())
                return len(gallery)

            match(work[0])  # numba's kernel compiled
            pairs_1, pairs_n = _rate(match, work, 1), _rate(match, work, cores)
            kp = np.mean([len(xy) for xy, _ in feats])
            t = Table(f"local matcher, {extractor}: {len(crops)} photos of {data} ({kp:.0f} keypoints each on average, "
                      f"crops at most {spec.size} px), {QUERIES} queries x {GALLERY} gallery photos")
            t.add("extraction, 1 thread", extract_1, "images/s")
            t.add(f"extraction, {cores} threads", extract_n, "images/s", "", f"{extract_n / extract_1:.2f}x one thread")
            t.add("verified matching, 1 thread", pairs_1, "pairs/s")
            t.add(f"verified matching, {cores} threads", pairs_n, "pairs/s", "", f"{pairs_n / pairs_1:.2f}x one thread")
            for n in (2, 16):
                ext, pairs = extract_n / cores * n, pairs_n / cores * n
                t.add(f"Kaggle 2019 pass on {n} cores (projected)", (KAGGLE_PHOTOS / ext + KAGGLE_PAIRS / pairs) / 60,
                      "minutes", "", f"extract {KAGGLE_PHOTOS / ext / 60:.0f} + match {KAGGLE_PAIRS / pairs / 60:.0f} min")
            tables.append(t)
    return tables
