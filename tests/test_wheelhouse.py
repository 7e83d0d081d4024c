"""The wheelhouse: requirements.txt that installs with no index, the wheels pip resolves (minus what
the image provides), the cache keyed by requirements and target, and the SDK's own container
install script installing from it into a clean environment. Wheels here are tiny fakes built on
the spot, so nothing needs the network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launch.jobs import code, container, wheelhouse
from tests.helpers import fake_wheel
from titanic_lightning.errors import UsageError


@pytest.fixture
def index(tmp_path) -> Path:
    """A folder of wheels standing in for the package index: tinyapp needs tinydep and bigbase;
    bigbase (the 'torch' of this index) pins cudalib exactly."""
    folder = tmp_path / "index"
    fake_wheel(folder, "tinyapp", "1.0", ("tinydep>=1.0", "bigbase>=1.0"))
    fake_wheel(folder, "tinydep", "1.0")
    fake_wheel(folder, "tinydep", "2.0")
    fake_wheel(folder, "bigbase", "1.0", ("cudalib==1.0",))
    fake_wheel(folder, "cudalib", "1.0")
    return folder


def _offline(index: Path) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(index))


def test_staged_requirements_name_no_index_but_the_wheels_channel(tmp_path):
    plain = (code.stage(tmp_path / "plain") / "requirements.txt").read_text().splitlines()
    wheels = (code.stage(tmp_path / "wheels", wheelhouse=True) / "requirements.txt").read_text().splitlines()
    assert "--no-index" not in plain and not any(line.startswith("--find-links") for line in plain)
    assert wheels[:3] == ["--no-index", "--find-links ../wheels", "--find-links /opt/ml/input/data/wheels"]
    assert wheels[3:] == plain == code.requirements()


def test_pip_reads_the_requirements_file_and_finds_the_wheels_beside_the_code(tmp_path, index):
    # The container's layout: code/requirements.txt beside wheels/; pip runs from elsewhere.
    job = tmp_path / "job"
    (job / "code").mkdir(parents=True)
    (job / "code" / "requirements.txt").write_text("\n".join(wheelhouse.requirements_lines(["tinydep>=1.0"])) + "\n")
    fake_wheel(job / "wheels", "tinydep", "1.5")
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), "-r", str(job / "code" / "requirements.txt")],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.loads(report.read_text())["install"]] == [
        ("tinydep", "1.5")]
    # No index behind it: a wheel missing from the wheelhouse cannot be found anywhere else.
    (job / "wheels" / "tinydep-1.5-py3-none-any.whl").unlink()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "-r", str(job / "code" / "requirements.txt")], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0 and "tinydep" in done.stderr


def test_build_holds_the_closure_minus_what_the_target_provides_and_is_cached(tmp_path, index, monkeypatch):
    target = wheelhouse.Target(provided=("bigbase==1.0",))
    built = wheelhouse.build(["tinyapp>=1.0"], target, cache=tmp_path / "cache", pip_args=_offline(index))
    assert built.built and built.path == tmp_path / "cache" / "wheelhouse" / built.key
    # bigbase is provided, and cudalib is what it pins exactly: neither is shipped.
    assert built.wheels == ["tinyapp-1.0-py3-none-any.whl", "tinydep-2.0-py3-none-any.whl"]
    assert sorted(p.name for p in built.path.iterdir()) == sorted([*built.wheels, wheelhouse.MANIFEST])

    def no_pip(*args, **kwargs):
        raise AssertionError("pip ran for a wheelhouse that is cached")

    monkeypatch.setattr(wheelhouse.subprocess, "run", no_pip)
    again = wheelhouse.build(["tinyapp>=1.0"], target, cache=tmp_path / "cache", pip_args=_offline(index))
    assert not again.built and again.key == built.key and again.wheels == built.wheels
    # Other requirements, or another target, are another wheelhouse.
    assert wheelhouse.key(["tinyapp>=1.0", "tinydep<2"], target, _offline(index)) != built.key
    assert wheelhouse.key(["tinyapp>=1.0"], wheelhouse.Target.image("py312"), _offline(index)) != built.key
    assert wheelhouse.key(["tinyapp>=1.0"], target, _offline(index)) == built.key


@pytest.mark.slow
def test_a_half_built_wheelhouse_is_built_again(tmp_path, index):
    target = wheelhouse.Target()
    built = wheelhouse.build(["tinydep"], target, cache=tmp_path, pip_args=_offline(index))
    (built.path / built.wheels[0]).unlink()  # e.g. removed by hand: the manifest no longer holds
    again = wheelhouse.build(["tinydep"], target, cache=tmp_path, pip_args=_offline(index))
    assert again.built and (again.path / again.wheels[0]).is_file()


def test_a_requirement_no_index_has_is_one_line_and_leaves_no_wheelhouse(tmp_path, index):
    with pytest.raises(UsageError, match=r"^building the wheelhouse: resolving the requirements failed: .*nosuchpkg"):
        wheelhouse.build(["nosuchpkg>=1"], wheelhouse.Target(), cache=tmp_path, pip_args=_offline(index))
    assert not (tmp_path / "wheelhouse").exists()


def test_image_target_is_python_312_on_manylinux_with_its_torch():
    target = wheelhouse.Target.image("py312")
    options = target.pip_options()
    assert options[:5] == ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    assert "manylinux_2_28_x86_64" in options and "manylinux2014_x86_64" in options
    assert target.provided == ("torch==2.8.0",)


@pytest.mark.slow
def test_the_sdks_install_script_installs_from_the_wheelhouse_into_a_clean_host_environment(tmp_path):
    """What sm_train.sh runs on every host, `install_requirements.py requirements.txt` in the code
    folder, against a host environment that sees a base environment's packages but not this one's."""
    job = tmp_path / "job"
    (job / "code").mkdir(parents=True)
    (job / "code" / "requirements.txt").write_text("\n".join(wheelhouse.requirements_lines(["tinyapp"])) + "\n")
    fake_wheel(job / "wheels", "tinyapp", "1.0", ("tinydep",))
    fake_wheel(job / "wheels", "tinydep", "3.0")
    # This interpreter stands in for the image's Python (it brings pip); tinyapp is not in it.
    python = container.host_venv(tmp_path / "venv", Path(sys.executable))
    log = tmp_path / "install.log"
    exit_code, seconds = container.install_requirements(python, job / "code", log)
    assert exit_code == 0, log.read_text()
    assert seconds > 0 and "Installing requirements" in log.read_text()
    shown = subprocess.run([str(python), "-c", "import tinyapp, tinydep; print(tinyapp.__file__, tinydep.VERSION)"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert Path(shown[0]).is_relative_to(tmp_path / "venv") and shown[1] == "3.0"
    # Not installed in the launcher's own environment.
    assert subprocess.run([sys.executable, "-c", "import tinyapp"], capture_output=True).returncode != 0


@pytest.fixture
def emulated_image(monkeypatch):
    """`--container-venv` with this interpreter standing in for the training image (it already has
    every requirement, so the install needs no network), and an empty wheelhouse."""
    monkeypatch.setattr(container, "image_venv", lambda cache=None: Path(sys.executable))


@pytest.mark.slow
def test_local_container_venv_installs_on_the_host_then_runs_there(prepared, tmp_path, emulated_image):
    import launch

    spec = launch.job_spec(hyperparameters={"epochs": 1, "hidden_sizes": [4]})
    run = launch.run_local(spec, data=prepared, jobs_dir=tmp_path / "jobs", runs_dir=None, container_venv=True)
    assert run.ok, run.summary["failure_reason"]
    assert run.summary["container_venv"] is True
    for host in run.summary["hosts"]:
        assert host["install_seconds"] > 0
        assert "Installing requirements" in Path(host["log"]).read_text()
    assert run.summary["command"][0] == str(run.job_dir / "algo-1" / "venv" / "bin" / "python")


def test_local_container_venv_fails_the_job_when_the_install_fails(prepared, tmp_path, emulated_image, monkeypatch):
    import launch

    monkeypatch.setattr(code, "requirements", lambda: ["nosuchpkg>=1"])
    monkeypatch.setattr(wheelhouse, "build", lambda requirements, target, cache=None, pip_args=(): wheelhouse.Wheelhouse(
        path=tmp_path, key="empty"))
    run = launch.run_local(launch.job_spec(wheelhouse=True), data=prepared, jobs_dir=tmp_path / "jobs", runs_dir=None,
                           container_venv=True)
    assert run.status == "Failed"
    assert run.summary["failure_reason"].startswith("algo-1: installing requirements.txt failed with exit code 1")
    assert (run.job_dir / "code" / "requirements.txt").read_text().splitlines() == [
        *wheelhouse.requirements_lines(["nosuchpkg>=1"])]
    assert (run.job_dir / "algo-1" / "input" / "data" / "wheels").resolve() == run.job_dir / "wheels"
    assert "nosuchpkg" in Path(run.summary["hosts"][0]["log"]).read_text()
    assert run.summary["hosts"][0]["exit_code"] == 1 and run.model_artifact is None


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path, index):
    blocker = tmp_path / "cache"
    blocker.write_text("a file, not a folder")
    with pytest.raises(UsageError, match=rf"^building the wheelhouse: cannot write to {blocker}/wheelhouse .*"
                                         rf"set {wheelhouse.CACHE_VARIABLE} to a writable folder$"):
        wheelhouse.build(["tinydep"], wheelhouse.Target(), cache=blocker, pip_args=_offline(index))
    assert blocker.read_text() == "a file, not a folder"
