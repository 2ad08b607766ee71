"""Job `tune_fusion`: choose how strongly recommendations are diversified, per model, on the validation step.

Thin entry point for schedulers (Databricks tasks, spark-submit): every option of `socialrec run`
applies, e.g. `--conf conf/databricks.yml --run-id RUN`.
"""
import sys

from socialrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "--stages", "tune_fusion", *sys.argv[1:]]))
