"""Job `maintain`: OPTIMIZE (Z-ordered per maintenance.zorder) and VACUUM every table of the lake.

Thin entry point for schedulers (the bundle's weekly maintenance job, spark-submit): every option of
`socialrec maintain` applies, e.g. `--conf conf/databricks.yml --tables silver.events,gold.recommendations`.
"""
import sys

from socialrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["maintain", *sys.argv[1:]]))
