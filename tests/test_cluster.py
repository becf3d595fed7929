"""``atlas reproduce --executor ray`` (:mod:`atlas.cluster`) on a real local Ray: the records it writes
are the local run's, value for value (measured latencies aside); a failing or killed task is reported by
paper and seed, and its paper gets no record."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the cluster tests need the [cluster] extra: pip install -e '.[cluster]'")

from atlas import cli, cluster  # noqa: E402
from atlas.harness.runner import Request, reproduce  # noqa: E402

KEYS = ["han2015", "hinton2015", "li2016"]
#: Quantities timed on the machine: they differ between any two runs, local or not.
MEASURED = ("latency", "speedup")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray for the module, its tasks seeing this module's cache folder."""
    cache = tmp_path_factory.mktemp("ray-cache")
    old = os.environ.get("ATLAS_CACHE_DIR")
    os.environ["ATLAS_CACHE_DIR"] = str(cache)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the tasks defined below
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"ATLAS_CACHE_DIR": str(cache)}})
    yield cache
    ray.shutdown()
    if old is None:
        os.environ.pop("ATLAS_CACHE_DIR", None)
    else:
        os.environ["ATLAS_CACHE_DIR"] = old


def comparable(path: Path) -> dict:
    """A record without what differs between any two runs: provenance and timed quantities."""
    data = json.loads(path.read_text())
    for outcome in data["outcomes"]:
        outcome["metrics"] = {k: v for k, v in outcome["metrics"].items() if not any(m in k for m in MEASURED)}
    data.pop("provenance")
    return data


def test_ray_records_are_the_local_records(local_ray, tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(local_ray))
    local_dir, ray_dir = tmp_path / "local", tmp_path / "ray"
    for key in KEYS:
        reproduce(Request(key, "smoke", results_dir=local_dir, progress=False))
    outcomes = cluster.reproduce([Request(key, "smoke", results_dir=ray_dir, progress=False) for key in KEYS])
    assert [o.key for o in outcomes] == KEYS and all(o.record is not None and not o.errors for o in outcomes)
    for key in KEYS:
        local, remote = local_dir / key / "smoke.json", ray_dir / key / "smoke.json"
        assert comparable(remote) == comparable(local), key
        prov = json.loads(remote.read_text())["provenance"]
        assert prov["executor"] == "ray" and prov["seeds"] == json.loads(local.read_text())["seeds"]
        assert sorted(prov["nodes"]) == sorted(str(s) for s in json.loads(local.read_text())["seeds"])
    # han2015 measured real values: the comparison above can fail
    han = json.loads((ray_dir / "han2015" / "smoke.json").read_text())
    assert any(v["values"][0] > 0 for o in han["outcomes"] for v in o["metrics"].values())


def raise_for_seed_one(req, seed, after=None, threads=None):
    if req.key == "hinton2015" and seed == 1:
        raise ValueError("planted failure of seed 1")
    return cluster.run_seed(req, seed, after, threads)


def kill_worker_for_li2016(req, seed, after=None, threads=None):
    if req.key == "li2016":
        os._exit(1)  # the worker process dies mid-task
    return cluster.run_seed(req, seed, after, threads)


def test_a_failing_task_is_reported_by_paper_and_seed(local_ray, tmp_path):
    outcomes = cluster.reproduce([Request(k, "smoke", results_dir=tmp_path, progress=False)
                                  for k in ("han2015", "hinton2015")], task=raise_for_seed_one)
    han, hinton = outcomes
    assert han.record is not None and (tmp_path / "han2015" / "smoke.json").exists()
    assert hinton.record is None and len(hinton.errors) == 1
    assert hinton.errors[0].startswith("seed 1: ValueError: planted failure of seed 1")
    assert not (tmp_path / "hinton2015").exists() or not list((tmp_path / "hinton2015").glob("*.json"))


def test_a_killed_worker_leaves_no_record(local_ray, tmp_path):
    done: list[tuple[str, int, str | None]] = []
    outcomes = cluster.reproduce([Request(k, "smoke", results_dir=tmp_path, progress=False)
                                  for k in ("li2016", "hinton2015")], task=kill_worker_for_li2016,
                                 on_done=lambda key, seed, error: done.append((key, seed, error)))
    li, hinton = outcomes
    assert li.record is None and li.errors and "seed 0" in li.errors[0]
    assert hinton.record is not None
    assert not list(tmp_path.rglob("li2016/*.json")) and not list(tmp_path.rglob("*.tmp*"))
    assert ("li2016", 0) in [(k, s) for k, s, e in done if e]


def test_the_cli_runs_on_ray_and_reuses_an_unchanged_record(local_ray, tmp_path, capsys):
    args = ["reproduce", "hinton2015", "--profile", "smoke", "--executor", "ray", "--quiet",
            "--results-dir", str(tmp_path)]
    assert cli.main(args) == 0
    assert "ran now on Ray" in capsys.readouterr().out
    first = (tmp_path / "hinton2015" / "smoke.json").read_text()
    assert cli.main(args) == 0
    assert "reused: unchanged config and code" in capsys.readouterr().out
    assert (tmp_path / "hinton2015" / "smoke.json").read_text() == first  # reused, not rewritten
