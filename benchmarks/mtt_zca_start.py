"""What ZCA alone gives MTT: its starting point evaluated as if it were the result.

One real image per class (the draw MTT starts from, seed 0) of the whole cifar10-jpeg75
training split, ZCA-whitened (eps 0.1, fitted on the split), step size 0.01, evaluated
under the standard protocol (bf16, compile, 5 runs, one thread). The difference between an
MTT row and this number is what trajectory matching added.

    python benchmarks/mtt_zca_start.py [ipc]        # data from $DISTILL_BENCH_DATA
"""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from baselines.mtt import MTT, init_images  # noqa: E402
from distill_bench.budget import real_subset  # noqa: E402
from distill_bench.data import load_dataset  # noqa: E402
from distill_bench.evaluator import evaluate, get_protocol  # noqa: E402
from distill_bench.zca import whiten  # noqa: E402


def main(ipc: int = 1) -> None:
    torch.set_num_threads(1)
    data = load_dataset("cifar10-jpeg75")
    real = whiten(real_subset(data, "all", 0), 0.1)
    images, labels = init_images(real, ipc, "real", torch.Generator().manual_seed(0))
    syn = MTT().make_set(real, images, labels, eval_lr=0.01)
    started = time.time()
    runs = evaluate(syn, data, get_protocol("standard"), "convnet", 0, precision="bf16",
                    progress=False, compile_model=True)
    accs = [r.test_acc for r in runs]
    print(f"ipc {ipc}, random real + ZCA, lr 0.01: {[round(a, 2) for a in accs]} "
          f"mean {statistics.mean(accs):.2f} std {statistics.pstdev(accs):.2f} "
          f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
