"""distill_bench: a benchmark harness for dataset distillation.

Public API (the verbs: ``create_*``, ``list_*``, ``get_*``, ``load_*``)::

    from distill_bench import load_dataset, create_method, evaluate, get_protocol
"""
__version__ = "0.1.0"

from distill_bench.budget import real_subset  # noqa: E402,F401
from distill_bench.data import list_datasets, load_dataset  # noqa: E402,F401
from distill_bench.evaluator import evaluate, get_protocol, list_protocols  # noqa: E402,F401
from distill_bench.method import (DistillationMethod, MethodConfig, RealSubset,  # noqa: E402,F401
                                  RunContext, create_method, get_method, list_methods,
                                  register_method)
from distill_bench.networks import create_backbone, list_backbones  # noqa: E402,F401
from distill_bench.runner import Cell, run_cell  # noqa: E402,F401
from distill_bench.synthetic import Preprocessing, SyntheticSet  # noqa: E402,F401
