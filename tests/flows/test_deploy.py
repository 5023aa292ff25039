"""prefect.yaml: one deployment per recipe, deployed with `prefect deploy` to a local server and run by a worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from fakes import flow_stages as fakes
from flows import deployments
from tasks.core import manifest as mf

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(REPO / ".venv" / "bin" / "prefect")


def test_prefect_yaml_lists_every_recipe_with_its_schedule():
    assert (REPO / "prefect.yaml").read_text() == deployments.render(), \
        "prefect.yaml is out of date: run .venv/bin/python -m flows.deployments"
    project = yaml.safe_load((REPO / "prefect.yaml").read_text())
    recipes = sorted((REPO / "datasets").glob("*.yaml"))
    assert len(project["deployments"]) == len(recipes) >= 1
    for entry in project["deployments"]:
        assert entry["entrypoint"] == "flows/deployments.py:scheduled_build"
        assert entry["work_pool"]["name"] == "faceset"
        assert (REPO / entry["parameters"]["recipe"]).is_file()
    staff = next(e for e in project["deployments"] if e["name"] == "staff-majors")
    assert staff["schedules"] == [{"cron": "0 4 * * 1", "timezone": "UTC", "active": True}]


def _cli(args: list[str], env: dict[str, str], timeout: int = 180) -> str:
    done = subprocess.run([PREFECT, *args], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_deploy_and_run_a_deployment_with_a_worker(tmp_path, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    datasets = tmp_path / "datasets"
    datasets.mkdir()
    fakes.write_recipe(datasets, "deployset")
    recipe_file = datasets / "deployset.yaml"
    recipe_file.write_text(recipe_file.read_text() + 'schedule: "*/5 * * * *"\n')
    fakes.write_site(tmp_path / "site.json", 10)
    project = deployments.project(datasets)
    entry = project["deployments"][0]
    entry["work_pool"]["name"] = "faceset-test"
    entry["parameters"].update(data_root=str(tmp_path / "data"), stages="fakes.flow_stages:stages")
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump(project, sort_keys=False))

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(),
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
               FACESET_TEST_SITE=str(tmp_path / "site.json"), FACESET_TEST_LOG=str(tmp_path / "calls.log"),
               FACESET_WORKERS="1")
    _cli(["work-pool", "create", "faceset-test", "--type", "process"], env)
    _cli(["--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)], env)

    async def deployment():
        async with get_client() as client:
            return await client.read_deployment_by_name("faceset-scheduled-build/deployset")

    found = asyncio.run(deployment())
    assert [s.schedule.cron for s in found.schedules] == ["*/5 * * * *"]
    assert found.parameters["stages"] == "fakes.flow_stages:stages"

    _cli(["deployment", "run", "faceset-scheduled-build/deployset"], env)
    worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "faceset-test", "--run-once"], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = worker.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        worker.kill()
        output, _ = worker.communicate()
        pytest.fail(f"the worker did not finish the run:\n{output[-3000:]}")

    async def runs():
        async with get_client() as client:
            flow_runs = await client.read_flow_runs(limit=20, sort="START_TIME_DESC")
            return {r.name: r for r in flow_runs}, flow_runs

    _, flow_runs = asyncio.run(runs())
    parent = [r for r in flow_runs if r.deployment_id == found.id]
    assert parent and parent[0].state.is_completed(), output[-3000:]
    child = [r for r in flow_runs if r.parent_task_run_id is not None and r.state and r.state.is_completed()]
    assert child, "the build-deployset subflow did not run"
    manifest = mf.read(tmp_path / "data" / "deployset" / "manifest.parquet")
    assert len(manifest) == 10
