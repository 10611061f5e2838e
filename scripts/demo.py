"""The whole flow on a synthetic competition: generate, train three backbones, export, blend, tune."""
from __future__ import annotations

import os
import time

# Idle OpenMP threads sleep instead of spinning (as in train.py): spinning made training on a busy
# 2-core machine up to 10x slower. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kit import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "Generate `synthetic small` (or reuse it), train one tiny member per family (ResNet, Inception, SENet), "
        "export them to ONNX and run onnxruntime, blend with leak + new_whale + balance, tune with Optuna, and "
        "write submissions/demo.csv, submissions/demo.pseudo.csv and the reports. Re-running reuses what is done.",
        "python scripts/demo.py            # about 10 minutes on 2 CPU cores the first time\n"
        "  python scripts/demo.py --force    # start over",
    )
    p.add_argument("--data", default="data/small", help="where the synthetic competition lives (default data/small)")
    p.add_argument("--size", default="small", help="synthetic size when it must be generated (default small)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--trials", type=int, default=150, help="Optuna trials (default 150)")
    p.add_argument("--force", action="store_true", help="regenerate, retrain and re-export everything")
    args = p.parse_args(argv)

    from kit.demo import run_demo

    start = time.perf_counter()
    result = run_demo(args.data, args.size, args.seed, args.trials, args.force)
    print()
    print(result.table())
    print("stages: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
          + f"; total {time.perf_counter() - start:.0f}s")
    print("wrote: " + ", ".join(result.files))
    return 0


if __name__ == "__main__":
    cli.run(main)
