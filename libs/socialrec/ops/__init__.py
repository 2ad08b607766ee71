"""Operator tools: `socialrec status` (the lake at a glance), `socialrec report` (one run as an HTML page),
the notebooks' widget shim and a local runner for Databricks source-format notebooks."""
