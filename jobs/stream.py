"""Job `stream`: new events -> silver -> touched users' gold rows -> their recommendations (Structured Streaming).

Thin entry point for schedulers (a continuous Databricks job, spark-submit): every option of `socialrec stream`
applies, e.g. `--conf conf/databricks.yml`.
"""
import sys

from socialrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["stream", *sys.argv[1:]]))
