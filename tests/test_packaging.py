"""The installed package: a wheel built from this tree, installed in a fresh virtual environment,
runs the atlas from its own files (no checkout) and writes records only where the README says.

The wheel tests build from a copy of the files git would package (tracked, and untracked but not
ignored), so the checkout gets no build/ or egg-info; the virtual environment sees the system
site-packages (torch, and this project's editable install, which the wheel must shadow) and gets the
wheel alone (--no-deps, --no-index: nothing is fetched)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import atlas
from atlas import reference, results


@dataclass
class Installed:
    wheel: Path
    venv: Path
    site_packages: Path
    env: dict[str, str]
    work: Path  # the working directory: empty, no papers.yaml
    tmp: Path

    def run(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.venv / "bin" / argv[0]), *argv[1:]]
        proc = subprocess.run(cmd, cwd=self.work, env={**self.env, **env}, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def python(self, code: str, **env: str) -> str:
        return self.run("python", "-c", code, **env).stdout

    def package_files(self) -> set[str]:
        """The installed atlas package's files (bytecode aside)."""
        base = self.site_packages / "atlas"
        return {p.relative_to(base).as_posix() for p in base.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}


def _source_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=atlas.ROOT, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("needs git and a git checkout of the atlas")
    return [name for name in out.decode().split("\0") if name and (atlas.ROOT / name).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    if atlas.CHECKOUT is None:
        pytest.skip("builds a wheel from a checkout")
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    for name in _source_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(atlas.ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ATLAS_", "PYTHON", "PIP_")) and k != "VIRTUAL_ENV"}
    env |= {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}

    def run(*cmd: str | Path) -> None:
        proc = subprocess.run([str(c) for c in cmd], cwd=src, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", ".")
    wheel = next((tmp / "dist").glob("compression_atlas-*.whl"))
    venv = tmp / "venv"  # outside the clone
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv)
    # --ignore-installed: the system site-packages holds this project (editable); install beside it
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps",
        "--ignore-installed", wheel)
    site_packages = next(venv.glob("lib/python3*/site-packages"))
    work = tmp / "work"
    work.mkdir()
    env |= {"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(venv),
            "ATLAS_CACHE_DIR": str(tmp / "cache"), "XDG_DATA_HOME": str(tmp / "data"),
            "PYTHONDONTWRITEBYTECODE": "1"}
    return Installed(wheel, venv, site_packages, env, work, tmp)


@pytest.mark.slow
def test_wheel_carries_what_the_atlas_reads(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    published = {p.relative_to(atlas.ROOT).as_posix() for p in (atlas.ROOT / "results").rglob("*.json")}
    assert published and any(p.startswith("results/reference/") for p in published)
    assert {f"atlas/_data/{p}" for p in published} <= names
    assert {"atlas/_data/papers.yaml", "atlas_reproductions/manifest.json",
            "atlas_reproductions/hinton2015.py", "atlas/cli.py", "atlas_kernels/__init__.py"} <= names
    # nothing else from the repository root: no tests, site, README or pyproject in the package
    assert not [n for n in names if n.startswith("atlas/_data/") and not (
        n == "atlas/_data/papers.yaml" or (n.startswith("atlas/_data/results/") and n.endswith(".json")))]


@pytest.mark.slow
def test_the_wheel_not_the_checkout_is_imported(installed: Installed) -> None:
    out = installed.python(
        "import json, sys, atlas, atlas_reproductions, atlas.manifest as m\n"
        "print(json.dumps({'atlas': atlas.__file__, 'repro': atlas_reproductions.__file__,"
        " 'checkout': str(atlas.CHECKOUT), 'root': str(atlas.ROOT), 'repro_dir': str(m.reproductions_dir()),"
        " 'sys_path': sys.path}))")
    seen = json.loads(out)
    where = installed.site_packages.resolve()
    if not Path(seen["atlas"]).resolve().is_relative_to(where):
        pytest.fail(f"the venv imported atlas from {seen['atlas']}, not from its wheel in {where}: the "
                    f"editable install shadows it (sys.path: {seen['sys_path']})")
    assert Path(seen["repro"]).resolve().is_relative_to(where)
    assert seen["checkout"] == "None"
    assert Path(seen["root"]).resolve() == where / "atlas" / "_data"
    assert Path(seen["repro_dir"]).resolve() == where / "atlas_reproductions"


@pytest.mark.slow
def test_installed_cli_lists_shows_and_reproduces(installed: Installed) -> None:
    before = installed.package_files()
    listed = installed.run("atlas", "list").stdout
    assert "hinton2015" in listed and "Distilling the Knowledge in a Neural Network" in listed
    hinton = next(line for line in listed.splitlines() if line.startswith("hinton2015 "))
    assert hinton.endswith(" yes"), hinton  # its reproduction is found in atlas_reproductions
    shown = installed.run("atlas", "show", "hinton2015").stdout
    assert "Distilling the Knowledge in a Neural Network" in shown and "Geoffrey Hinton" in shown
    # the published records and references come from the package; a user's runs would shadow them
    found = json.loads(installed.python(
        "import json; from atlas import results, reference\n"
        "print(json.dumps({'published': sorted(results.published()), 'write': str(results.results_dir()),"
        " 'refs': len(reference.load_references()), 'ref_write': str(reference.reference_dir())}))"))
    assert "hinton2015" in found["published"] and "han2015" in found["published"]
    assert found["refs"] == len(list((atlas.ROOT / "results" / "reference").glob("*/*.json"))) > 0
    data = installed.tmp / "data" / "compression-atlas" / "results"
    assert (found["write"], found["ref_write"]) == (str(data), str(data / "reference"))

    out = installed.tmp / "results"
    # the session's model cache (tests/conftest.py, in the pytest temp folder): teachers train once
    installed.run("atlas", "reproduce", "hinton2015", "--profile", "smoke", "--seed", "0", "--quiet",
                  ATLAS_RESULTS_DIR=str(out), ATLAS_CACHE_DIR=os.environ["ATLAS_CACHE_DIR"])
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert len(written) == 1 and written[0].startswith("hinton2015/smoke"), written
    record = results.load(out / written[0])
    assert record.seeds == [0] and record.provenance["atlas"] == atlas.__version__
    assert record.provenance["commit"] is None  # no checkout: no commit to name
    assert installed.package_files() == before  # nothing written into site-packages
    assert not (installed.tmp / "data").exists()


# ---------------------------------------------------------------------------------------------
# the rule, in process (an installed package simulated by CHECKOUT = None)


@pytest.fixture
def as_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package_data = tmp_path / "site-packages" / "atlas" / "_data"
    for key, name in (("hinton2015", "quick.json"), ("han2015", "quick.json")):
        (package_data / "results" / key).mkdir(parents=True)
        shutil.copy(atlas.ROOT / "results" / key / name, package_data / "results" / key / name)
    for module in (results, reference):
        monkeypatch.setattr(module, "CHECKOUT", None)
        monkeypatch.setattr(module, "ROOT", package_data)
    for var in ("ATLAS_RESULTS_DIR", "ATLAS_REFERENCE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return package_data


def test_checkout_reads_and_writes_its_results(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATLAS_RESULTS_DIR")
    monkeypatch.delenv("ATLAS_REFERENCE_DIR", raising=False)
    assert atlas.CHECKOUT == atlas.ROOT == Path(atlas.__file__).resolve().parent.parent
    assert results.results_dir() == atlas.ROOT / "results" and results.record_dirs() == [atlas.ROOT / "results"]
    assert reference.reference_dirs() == [atlas.ROOT / "results" / "reference"]


def test_installed_writes_to_the_user_folder_and_reads_the_published(
    as_installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tmp_path / "data" / "compression-atlas" / "results"
    assert results.results_dir() == user
    assert results.record_dirs() == [user, as_installed / "results"]
    assert sorted(results.published()) == ["han2015", "hinton2015"]
    assert results.find_record("han2015", "quick.json") == as_installed / "results" / "han2015" / "quick.json"
    # a user's own record of a paper shadows the published one
    (user / "han2015").mkdir(parents=True)
    shutil.copy(as_installed / "results" / "han2015" / "quick.json", user / "han2015" / "quick.json")
    assert results.published()["han2015"].path == user / "han2015" / "quick.json"
    assert results.find_record("han2015", "quick.json") == user / "han2015" / "quick.json"
    assert [p.parent.parent for p in results.record_files()] == [user, as_installed / "results"]
    assert reference.reference_dirs() == [user / "reference", as_installed / "results" / "reference"]
    # an explicit folder is the only one read
    monkeypatch.setenv("ATLAS_RESULTS_DIR", str(tmp_path / "mine"))
    assert results.record_dirs() == [tmp_path / "mine"] and results.published() == {}
    assert results.record_dirs(tmp_path / "other") == [tmp_path / "other"]
