"""Job `clean`: bronze -> silver: dedupe, normalise, pseudonymise, quarantine bad rows.

Thin entry point for schedulers (Databricks tasks, spark-submit): every option of `socialrec run`
applies, e.g. `--conf conf/databricks.yml --run-id RUN`.
"""
import sys

from socialrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "--stages", "clean", *sys.argv[1:]]))
