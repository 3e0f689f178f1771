"""Example DAGs for the TruConnect provider, and the ``make demo`` runner (:mod:`dags_examples.demo`).

The DAG files are runnable documentation: copy them into a DAGs folder. They are not shipped in the wheel.
"""
