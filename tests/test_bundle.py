"""The Databricks Asset Bundle, checked offline: it parses, every task's entry point exists and accepts the
task's parameters, the task graph is the pipeline's stage order, the maintenance job runs weekly on prod, the
targets exist and every table of the Databricks config is a Unity Catalog name. (The bundle's published JSON
schema is not on PyPI, so no schema validation is done here; `databricks bundle validate` does it where the CLI
is installed.)"""
import re

import pytest
import yaml

from socialrec.cli import build_parser
from socialrec.config import PROJECT_ROOT, load_config
from socialrec.pipeline import STAGES

BUNDLE = PROJECT_ROOT / "databricks.yml"


@pytest.fixture(scope="module")
def bundle():
    return yaml.safe_load(BUNDLE.read_text())  # safe_load resolves the anchors and `<<` merge keys


@pytest.fixture(scope="module")
def tasks(bundle):
    jobs = bundle["resources"]["jobs"]
    assert set(jobs) == {"socialrec_pipeline", "socialrec_training", "socialrec_maintenance", "socialrec_stream"}
    return jobs["socialrec_pipeline"]["tasks"]


def _stage_of(task) -> str:
    """The stage a task's entry point runs: jobs/X.py calls main(["run", "--stages", X, *argv])."""
    script = (PROJECT_ROOT / task["spark_python_task"]["python_file"]).read_text()
    found = re.search(r'main\(\["run",\s*"--stages",\s*"([a-z_]+)",\s*\*sys\.argv\[1:\]\]\)', script)
    assert found, f"{task['spark_python_task']['python_file']} does not call main(['run', '--stages', X, *argv])"
    return found.group(1)


def test_bundle_parses_with_name_and_wheel(bundle):
    assert bundle["bundle"]["name"] == "socialrec"
    assert bundle["artifacts"]["socialrec_wheel"]["type"] == "whl"
    assert set(bundle["variables"]) >= {"catalog", "schema"}


def test_every_task_python_file_exists(tasks):
    for task in tasks:
        python_file = PROJECT_ROOT / task["spark_python_task"]["python_file"]
        assert python_file.is_file(), f"{task['task_key']}: {python_file} missing"
        assert task["libraries"] == [{"whl": "./dist/*.whl"}]
        assert task["job_cluster_key"] in {"cpu", "gpu"}


def test_entry_points_accept_the_task_parameters(bundle, tasks):
    job = bundle["resources"]["jobs"]["socialrec_pipeline"]
    defaults = {p["name"]: p["default"] for p in job["parameters"]}
    parser = build_parser()
    for task in tasks:
        stage = _stage_of(task)
        assert stage == task["task_key"]
        params = task["spark_python_task"]["parameters"]
        # substitute what Databricks would: job parameters and the job run id
        argv = [re.sub(r"\{\{job\.parameters\.(\w+)\}\}", lambda m: defaults[m.group(1)], p)
                .replace("{{job.run_id}}", "123456") for p in params]
        args = parser.parse_args(["run", "--stages", stage, *argv])
        assert args.command == "run" and args.stages == stage
        assert args.conf == "conf/databricks.yml" and args.run_id == "123456"
        assert (PROJECT_ROOT / args.conf).is_file()


def test_depends_on_is_the_pipeline_order(tasks):
    keys = [task["task_key"] for task in tasks]
    expected = [stage for stage in STAGES if stage != "generate"]
    assert sorted(keys) == sorted(expected)
    parents = {task["task_key"]: [d["task_key"] for d in task.get("depends_on", [])] for task in tasks}
    roots = [key for key, deps in parents.items() if not deps]
    assert roots == [expected[0]]
    order, current = [roots[0]], roots[0]
    while True:  # follow the single child of each task: a linear chain, no fan-out or fan-in
        children = [key for key, deps in parents.items() if current in deps]
        assert len(children) <= 1, f"{current} has several children {children}"
        if not children:
            break
        assert len(parents[children[0]]) == 1
        current = children[0]
        order.append(current)
    assert order == expected


def test_training_runs_on_the_gpu_cluster(bundle, tasks):
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in bundle["resources"]["jobs"]["socialrec_pipeline"]
                ["job_clusters"]}
    assert "gpu" in clusters["gpu"]["spark_version"]
    assert {t["task_key"]: t["job_cluster_key"] for t in tasks}["train"] == "gpu"


def test_training_job_runs_the_ml_notebook_with_its_widgets(bundle):
    from socialrec.ops.notebook_runner import HEADER

    (task,) = bundle["resources"]["jobs"]["socialrec_training"]["tasks"]
    notebook = PROJECT_ROOT / task["notebook_task"]["notebook_path"]
    text = notebook.read_text()
    assert text.splitlines()[0] == HEADER
    widgets = set(re.findall(r'param(?:_bool)?\("(\w+)"', text))
    assert set(task["notebook_task"]["base_parameters"]) <= widgets
    assert (PROJECT_ROOT / task["notebook_task"]["base_parameters"]["conf"]).is_file()
    assert task["libraries"] == [{"whl": "./dist/*.whl"}]


def test_targets_dev_default_and_prod_scheduled(bundle):
    targets = bundle["targets"]
    assert targets["dev"].get("default") is True and targets["dev"]["mode"] == "development"
    assert targets["prod"]["mode"] == "production"
    schedule = targets["prod"]["resources"]["jobs"]["socialrec_pipeline"]["schedule"]
    assert schedule["quartz_cron_expression"] and schedule["timezone_id"]


def test_maintenance_job_runs_the_maintain_entry_point_weekly_on_prod(bundle):
    job = bundle["resources"]["jobs"]["socialrec_maintenance"]
    (task,) = job["tasks"]
    script = (PROJECT_ROOT / task["spark_python_task"]["python_file"]).read_text()
    assert re.search(r'main\(\["maintain",\s*\*sys\.argv\[1:\]\]\)', script)
    assert task["libraries"] == [{"whl": "./dist/*.whl"}]
    defaults = {p["name"]: p["default"] for p in job["parameters"]}
    argv = [re.sub(r"\{\{job\.parameters\.(\w+)\}\}", lambda m: defaults[m.group(1)], p)
            for p in task["spark_python_task"]["parameters"]]
    args = build_parser().parse_args(["maintain", *argv])
    assert args.command == "maintain" and (PROJECT_ROOT / args.conf).is_file()
    cron = bundle["targets"]["prod"]["resources"]["jobs"]["socialrec_maintenance"]["schedule"]["quartz_cron_expression"]
    assert cron.split()[5] not in ("*", "?")  # a day of the week: weekly, not nightly


def test_databricks_tables_are_unity_catalog_names():
    conf = load_config(PROJECT_ROOT / "conf" / "databricks.yml")
    base = load_config(PROJECT_ROOT / "conf" / "base.yml")
    assert set(conf["lake"]["tables"]) == set(base["lake"]["tables"])  # nothing left on a local path
    for name, target in conf["lake"]["tables"].items():
        parts = target.split(".")
        assert len(parts) == 3 and all(re.fullmatch(r"[a-z_][a-z0-9_]*", p) for p in parts), f"{name}: {target}"


def test_stream_job_is_continuous_and_runs_the_stream_entry_point(bundle):
    job = bundle["resources"]["jobs"]["socialrec_stream"]
    assert job["continuous"]["pause_status"] == "PAUSED"
    assert bundle["targets"]["prod"]["resources"]["jobs"]["socialrec_stream"]["continuous"]["pause_status"] == "UNPAUSED"
    (task,) = job["tasks"]
    script = (PROJECT_ROOT / task["spark_python_task"]["python_file"]).read_text()
    assert 'main(["stream", *sys.argv[1:]])' in script
    parameters = [p.replace("{{job.parameters.conf}}", "conf/databricks.yml") for p in task["spark_python_task"]["parameters"]]
    args = build_parser().parse_args(["stream", *parameters])
    assert args.command == "stream" and args.conf == "conf/databricks.yml"
