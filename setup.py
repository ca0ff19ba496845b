from setuptools import find_packages, setup

setup(
    name="distill-bench",
    version="0.1.0",
    description="A benchmark harness for dataset distillation, with DeepKKT (Deep Support "
                "Vectors) and the DC, DSA, DM and MTT baselines.",
    python_requires=">=3.10",
    packages=find_packages(include=["distill_bench*", "methods*", "baselines*"]),
    install_requires=["torch", "torchvision", "kornia>=0.7", "scipy", "pandas", "numpy",
                      "pyyaml", "tqdm", "matplotlib", "pillow"],
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": ["distill-bench = distill_bench.cli:main"],
        "distill_bench.methods": [
            "random = baselines.random_subset:RandomSubset",
            "dc = baselines.dc:DC",
            "dsa = baselines.dc:DSA",
            "dm = baselines.dm:DM",
            "mtt = baselines.mtt:MTT",
            "deepkkt = methods.deepkkt.method:DeepKKT",
            "deepkkt-select = methods.deepkkt.method:DeepKKTSelect",
        ],
    },
)
