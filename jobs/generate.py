"""Job `generate`: the synthetic source, written as raw files in the generic input format.

Thin entry point for schedulers (Databricks tasks, spark-submit): every option of `socialrec run`
applies, e.g. `--conf conf/databricks.yml --run-id RUN`.
"""
import sys

from socialrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "--stages", "generate", *sys.argv[1:]]))
