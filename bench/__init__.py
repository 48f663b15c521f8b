"""Benchmarks of the pipeline: each prints its figures and the ratio measured in the same run.

python -m bench.throughput     training tokens/s: the project's train configuration vs the tutorial recipe
python -m bench.storage        bytes each new version adds to the DVC cache, as a fraction of the base
python -m bench.restore        git checkout + dvc checkout of a version and of a base switch vs cp -r
python -m bench.overheads      no-op dvc repro, dvc exp show with 20 experiments, every --help
python -m bench.default_run    wall time and peak RSS of the default `dvc repro` in a fresh copy
python -m bench --smoke        all of them in a tiny mode (what CI runs; figures not meaningful)
"""
