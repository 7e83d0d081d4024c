"""`launch/submit.py --hp`: every value is parsed by the entry's parser at submission, in every mode, and
no value can break out of the shell file the SageMaker container driver writes them into."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from launch.jobs import checks
from launch.jobs.container import _sdk_environment_script
from tests.helpers import BUCKET, ROLE, Recording, dry_run_summary, submit_inprocess, submit_subprocess

BAD_VALUES = [
    ("epochs=abc", "--epochs"),
    ("epochs=0", "--epochs"),
    ("epochs=1.5", "--epochs"),
    ("learning_rate=inf", "--learning_rate"),
    ("learning_rate=1e400", "--learning_rate"),  # the container passes it on as Infinity
    ("learning_rate=nan", "--learning_rate"),
    ("learning_rate=-0.1", "--learning_rate"),
    ("weight_decay=inf", "--weight_decay"),
    ("dropout=NaN", "--dropout"),
    ("batch_size=-1", "--batch_size"),
    ("patience=0", "--patience"),
    ("seed=-1", "--seed"),
    ("seed=4294967296", "--seed"),
    ("hidden_sizes=[1000000000000]", "--hidden_sizes"),
    ("checkpoint_every_n_seconds=inf", "--checkpoint_every_n_seconds"),
    ("early_stopping=maybe", "--early_stopping"),
    ("optimizer=sgd", "--optimizer"),
]


@pytest.mark.parametrize("pair, flag", BAD_VALUES)
def test_a_value_the_entry_refuses_is_refused_at_submission(pair, flag, capsys):
    code, out, err = submit_inprocess(["--dry-run", "--hp", pair], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --hp {pair}") and f"{flag}:" in lines[0], err


def test_strategy_value_is_checked_like_a_hyperparameter(capsys):
    code, out, err = submit_inprocess(["--dry-run", "--strategy", "ddp'; touch pwned; echo '"], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[0].startswith("error: --strategy ddp'"), err


def test_good_values_pass_unchanged(capsys):
    code, out, err = submit_inprocess(["--dry-run", "--hp", "learning_rate=1e-3", "--hp", "hidden_sizes=[64, 32]",
                                       "--hp", "early_stopping=false", "--strategy", "ddp"], capsys)
    assert code == 0, err
    assert dry_run_summary(err)["hyperparameters"] == {"learning_rate": "1e-3", "hidden_sizes": "[64, 32]",
                                                  "early_stopping": "false", "strategy": "ddp"}


def test_local_mode_refuses_before_the_job_directory(prepared, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    jobs = tmp_path / "jobs"
    code, out, err = submit_inprocess(["--local", "--data", str(data), "--jobs-dir", str(jobs),
                                       "--hp", "epochs=abc"], capsys)
    assert code == 2 and err.startswith("error: --hp epochs=abc: --epochs:")
    assert not jobs.exists()


def test_real_mode_refuses_before_any_upload(bucket, prepared, tmp_path, recording, capsys):
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    rec = recording.start()
    code, out, err = submit_inprocess(["--bucket", BUCKET, "--role", ROLE, "--data", str(data),
                                       "--hp", "learning_rate=inf"], capsys)
    entries = rec.stop()
    assert code == 2 and err.startswith("error: --hp learning_rate=inf: --learning_rate:"), err
    assert Recording.s3_puts(entries) == [] and Recording.sagemaker_calls(entries, "CreateTrainingJob") == []


# --- shell injection -----------------------------------------------------------------------------


def _payloads(marker) -> list[str]:
    return [
        f"patience=3'; touch {marker}; echo '",
        f"csv=x'$(touch {marker})'",
        # A JSON escape the driver decodes into a quote before it writes the file.
        f'csv="\\u0027; touch {marker}; echo \\u0027"',
        f"csv=x\ntouch {marker}",
        f"csv=x\rtouch {marker}",
        f"csv=x\\'; touch {marker}; #",
    ]


def _snapshot(root):
    return sorted(p.relative_to(root) for p in root.rglob("*"))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["--dry-run", "--local"])
def test_a_payload_runs_nothing_and_writes_nothing(mode, prepared, tmp_path, monkeypatch, capsys):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    monkeypatch.chdir(cwd)
    before = _snapshot(tmp_path)
    for payload in _payloads(tmp_path / "pwned") + _payloads("pwned"):
        code, out, err = submit_inprocess([mode, "--data", str(data), "--jobs-dir", str(tmp_path / "jobs"),
                                           "--hp", payload], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and out == "", (payload, err)
        assert len(lines) == 1 and lines[0].startswith("error: --hp ") and "printable ASCII" in lines[0], (payload, err)
    # The real command, as a user would type it.
    result = submit_subprocess([mode, "--data", str(data), "--jobs-dir", str(tmp_path / "jobs"),
                                "--hp", "patience=3'; touch pwned; echo '"], cwd=cwd, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: --hp patience=3'; touch pwned; echo ': holds \"'\"; a hyperparameter value may hold printable ASCII "
        "characters other than ' and \\ (the job's container writes it between single quotes into a shell file)"]
    assert _snapshot(tmp_path) == before  # no job directory, no prepared data, no pwned file
    assert not (tmp_path / "jobs").exists() and not list(tmp_path.rglob("pwned"))


def _candidates() -> list[str]:
    """Hostile and ordinary values: every ASCII character (and a few others) alone, inside text and
    inside JSON strings and lists, JSON escapes, numbers the driver rewrites, and the entry's forms."""
    chars = [chr(i) for i in range(128)] + ["é", "\u2028", "\U0001f600"]
    out = []
    for c in chars:
        out += [c, f"a{c}b", f'"{c}"', f'["a{c}"]', f'{{"k": "{c}"}}', f"{c}{c}"]
    for i in range(0, 128, 7):
        out += [f'"\\u{i:04x}"', f'"x\\u{i:04x}y"']
    out += ['"\\n"', '"\\\\"', '"\\""', "1e400", "-1e400", "NaN", "Infinity", "-0", "1e-3", "0.0010", "1E5",
            "[64, 32]", "[64,32]", "true", "True", "yes", "null", "", " ", "  x  ", "$HOME", "`id`", "$(id)",
            '"quoted"', "pkg.mod:factory", "/opt/ml/input/data/train", "a" * checks.HP_VALUE_LIMIT, "99999999999999999999999"]
    return out


def _accepted() -> list[str]:
    accepted = []
    for value in _candidates():
        try:
            accepted.append(checks.check_carried(value, "--hp x"))
        except checks.UsageError:
            pass
    return accepted


def test_every_accepted_value_round_trips_through_the_sdk_driver_and_bash(tmp_path, monkeypatch):
    """The SDK's own set_env writes the file; bash sources it under `set -e`; each variable is what the
    entry is given, and SM_HPS decodes to the same values."""
    from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args, safe_deserialize

    accepted = _accepted()
    assert "1e-3" in accepted and "[64, 32]" in accepted and "pkg.mod:factory" in accepted
    assert not any("'" in v or "\\" in v or "\n" in v for v in accepted)
    hps = {f"x{i}": value for i, value in enumerate(accepted)}
    env_file = tmp_path / "sm_training.env"
    resource = {"current_host": "algo-1", "current_instance_type": "ml.m5.large", "hosts": ["algo-1"],
                "network_interface_name": "lo"}
    monkeypatch.setenv("TRAINING_JOB_NAME", "round-trip")  # set_env reads it; nothing else may see it
    with _sdk_environment_script() as sm_env:
        sm_env.set_env(resource_config=resource, input_data_config={"train": {}}, hyperparameters_config=hps,
                       output_file=str(env_file))
    names = [f"SM_HP_{key.upper()}" for key in hps] + ["SM_HPS", "SM_TRAINING_ENV"]
    script = f"set -e; cd {tmp_path}; source {env_file}; " + " ".join(f'printf "%s\\0" "${n}";' for n in names)
    result = subprocess.run(["bash", "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    values = result.stdout.decode().split("\0")[:-1]
    assert len(values) == len(names)
    for value, seen in zip(hps.values(), values):
        assert seen == checks.container_forms(value)[0], (value, seen)
    sm_hps, training_env = json.loads(values[-2]), json.loads(values[-1])
    expected = json.dumps({k: safe_deserialize(v) for k, v in hps.items()})
    assert json.dumps(sm_hps) == expected and json.dumps(training_env["hyperparameters"]) == expected
    assert hyperparameters_to_cli_args(sm_hps) == [a for k, v in hps.items() for a in (f"--{k}", checks.container_forms(v)[0])]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm_training.env"]  # nothing ran


def test_values_that_would_break_the_file_are_refused():
    for value in ["'", "a'b", "a\nb", "a\\b", '"\\u0027"', "\x00", "\x7f", "é", "a" * (checks.HP_VALUE_LIMIT + 1)]:
        with pytest.raises(checks.UsageError):
            checks.check_carried(value, "--hp x")


# --- the launcher's own flags ------------------------------------------------------------------------


@pytest.mark.parametrize("flags, expected", [
    (["--region", "mars-north-1"], "error: --region 'mars-north-1': not a region SageMaker's PyTorch training image"),
    (["--region", "us-east-1; rm -rf /"], "error: --region 'us-east-1; rm -rf /': not a region"),
    (["--max-run", str(checks.LONGEST_JOB_S + 1)],
     f"error: --max-run {checks.LONGEST_JOB_S + 1}: SageMaker runs a job for at most"),
    (["--instance-count", str(checks.MAX_INSTANCE_COUNT + 1)], f"error: --instance-count {checks.MAX_INSTANCE_COUNT + 1}: at most"),
    (["--instance-count", str(10**9)], "error: --instance-count 1000000000: at most 20"),
    (["--prefix", "a/../b"], "error: --prefix 'a/../b': use a plain S3 key prefix"),
    (["--prefix", ".."], "error: --prefix '..': use a plain S3 key prefix"),
    (["--prefix", "my runs"], "error: --prefix 'my runs': use a plain S3 key prefix"),
    (["--prefix", "runs\ttab"], "error: --prefix 'runs\\ttab': use a plain S3 key prefix"),
    (["--prefix", "runs\nx"], "error: --prefix 'runs\\nx': use a plain S3 key prefix"),
    (["--prefix", "runs\x1b[31m"], "error: --prefix 'runs\\x1b[31m': use a plain S3 key prefix"),
])
@pytest.mark.parametrize("mode", ["--dry-run", "--local"])
def test_launcher_flags_out_of_range_are_one_line_before_any_work(flags, expected, mode, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = submit_inprocess([mode, "--jobs-dir", str(tmp_path / "jobs"), *flags], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(expected), err
    assert list(tmp_path.iterdir()) == []  # no job directory, no data prepared


@pytest.mark.parametrize("flags", [["--max-run", str(checks.LONGEST_JOB_S)], ["--instance-count", str(checks.MAX_INSTANCE_COUNT)],
                                   ["--region", "eu-west-1"], ["--prefix", "team/titanic-v2.1"]])
def test_launcher_flags_at_their_bounds_are_accepted(flags, capsys):
    code, out, err = submit_inprocess(["--dry-run", *flags], capsys)
    assert code == 0, err


def test_the_emulations_rewritten_env_file_sources_exactly_under_any_jobs_dir(tiny_channels, tmp_path):
    """--local rewrites sm_training.env with this machine's paths, which come from --jobs-dir."""
    from launch.jobs import container

    data_dir = tiny_channels["train"].parent
    (data_dir / "preprocessing.json").write_text("{}")
    spec = checks.build_spec(hp=["epochs=5"])
    host_dir = tmp_path / "it's $(touch pwned) `touch pwned`\n" / "algo-1"
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    channels = container.lay_out_host(host_dir, spec, "algo-1", data_dir, code_dir)
    env = container.sagemaker_env(spec, "job-1", "algo-1", host_dir, channels, port=4321)
    env_file = host_dir / "input" / "sm_training.env"
    result = subprocess.run(["bash", "-c", 'set -e; cd "$1"; source "$2"; printf "%s\\0%s" "$SM_MODEL_DIR" "$SM_TRAINING_ENV"',
                             "-", str(tmp_path), str(env_file)], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    model_dir, training_env = result.stdout.decode().split("\0")
    assert model_dir == env["SM_MODEL_DIR"] == f"{host_dir}/model"
    assert json.loads(training_env)["model_dir"] == f"{host_dir}/model"
    assert not list(tmp_path.rglob("pwned"))
