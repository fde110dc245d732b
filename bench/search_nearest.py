"""Similarity search's ranking step (services/searches.py): numpy's matrix product + partial sort
(`nearest`), a faiss IndexFlatIP built for each search, and one kept between searches
(VectorIndex above FAISS_MIN_VECTORS); all exact, on random unit vectors of the base embedders'
sizes. Prints one table; the ratios are numpy's time over each faiss variant's.

Run: MODELMILL_JOB_THREADS=1 .venv/bin/python bench/search_nearest.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from modelmill.services.searches import nearest

SIZES = (1_000, 5_000, 20_000, 50_000, 100_000)
DIMENSIONS = (384, 1280)  # MiniLM-L6 (texts), EfficientNet-Lite0 (images)
TOP = 128  # one page of hits at the largest page size the API allows by default


def timed(function, repeats: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def measure(
    vectors: np.ndarray, query: np.ndarray, repeats: int
) -> tuple[float, float, float, bool]:
    """Seconds for numpy, a faiss index built per search, and one kept; and whether they agree."""
    brute = timed(lambda: nearest(vectors, query, TOP, use_faiss=False), repeats)
    built = timed(lambda: nearest(vectors, query, TOP, use_faiss=True), repeats)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    kept = timed(lambda: index.search(query[None, :], TOP), repeats)
    same = list(nearest(vectors, query, TOP)[0]) == list(index.search(query[None, :], TOP)[1][0])
    return brute, built, kept, same


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"threads {args.threads}, top {TOP}, best of {args.repeats}")
    print(
        f"{'vectors':>8} {'dim':>5} {'numpy ms':>9} {'built ms':>9} {'kept ms':>8} "
        f"{'numpy/built':>12} {'numpy/kept':>11} same"
    )
    for dim in DIMENSIONS:
        for size in SIZES:
            vectors = rng.normal(size=(size, dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            brute, built, kept, same = measure(vectors, vectors[size // 2], args.repeats)
            print(
                f"{size:>8} {dim:>5} {brute * 1e3:>9.2f} {built * 1e3:>9.2f} {kept * 1e3:>8.2f} "
                f"{brute / built:>12.2f} {brute / kept:>11.2f} {same}"
            )


if __name__ == "__main__":
    main()
