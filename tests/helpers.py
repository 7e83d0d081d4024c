"""Helpers shared by the tests (fixtures are in conftest.py): synthetic channels, runners for
`python -m entry.*` commands and for `launch/submit.py` with a clean environment, moto's request
recorder, and the processes of multi-process training runs."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from titanic_lightning.environment import without_launcher

REPO = Path(__file__).resolve().parents[1]


def write_channel(path: Path, split: str, rows: int = 40, features: int = 5, seed: int = 0, **overrides) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features)).astype("float32")
    y = (X[:, 0] + 0.3 * rng.normal(size=rows) > 0).astype("int64")
    arrays = {f"X_{split}": X, f"y_{split}": y}
    arrays.update(overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def npz_declaring(path: Path, split: str, rows: int, claim_in_zip: bool = False) -> Path:
    """A small npz whose array headers declare `rows` rows (7 float32 features) over 4 KB of data.

    With `claim_in_zip`, the archive's own record of the features' uncompressed size claims them too,
    as a file crafted to get past a size check would.
    """
    import io
    import struct
    import zipfile

    def npy(shape: tuple[int, ...], descr: str, data: bytes) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
        return buf.getvalue() + data

    features = npy((rows, 7), "<f4", b"\0" * 4096)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"X_{split}.npy", features)
        archive.writestr(f"y_{split}.npy", npy((rows,), "<i8", b"\0" * 64))
    if claim_in_zip:
        claimed = len(features) - 4096 + rows * 7 * 4
        data = bytearray(path.read_bytes())
        # The first member's uncompressed size: its local header (offset 22) and central directory entry (24).
        struct.pack_into("<I", data, data.find(b"PK\x03\x04") + 22, claimed)
        struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, claimed)
        path.write_bytes(bytes(data))
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment minus anything SageMaker/torchrun-like, plus `extra`."""
    env = without_launcher()
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_entry(module: str, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300,
              warm: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m entry.<module> args...` in `cwd`; return the CompletedProcess.

    The process is forked from the warm interpreter that has imported the project and Lightning
    (`launch.jobs.warm`, as a local search's trials are): its own folder, environment, session and
    exit code, without paying the imports again. `warm=False` starts a fresh interpreter, for what
    depends on the imports themselves; the suite's end-to-end tests start theirs fresh too.
    """
    from concurrent.futures import ThreadPoolExecutor

    from launch.jobs.processes import signal_group
    from launch.jobs.warm import WarmProcess

    argv = [sys.executable, "-m", f"entry.{module}", *args]
    env = env if env is not None else clean_env()
    if not warm:
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    process = WarmProcess(f"entry.{module}", list(args), cwd=cwd, env=env, stderr_apart=True)
    with ThreadPoolExecutor(2) as pool:
        out, err = pool.submit(process.stdout.read), pool.submit(process.stderr.read)
        code = process.wait(timeout)
        if code is None:
            signal_group(process, signal.SIGKILL)
            process.wait()
            raise subprocess.TimeoutExpired(argv, timeout)
        return subprocess.CompletedProcess(argv, code, out.result(), err.result())


def invoke(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """A command's `main` run in-process under `run_command`, as `python -m entry.*` runs it:
    (exit code, stdout, stderr)."""
    import pytest

    from titanic_lightning.command import run_command

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_command(main, argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


# --- the launcher -----------------------------------------------------------------------------

SUBMIT = REPO / "launch" / "submit.py"
ROLE = "arn:aws:iam::123456789012:role/TitanicTraining"
BUCKET = "titanic-test-bucket"
REGION = "us-east-1"
# Anything that could point boto3 somewhere real, or at other credentials.
AWS_VARS = ("AWS_", "SAGEMAKER_", "BOTO_")


class Recording:
    """The requests moto received while recording, decoded."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def _call(self, action: str) -> str:
        import urllib.request

        method = "GET" if action == "download-recording" else "POST"
        req = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/{action}", method=method, data=None)
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.read().decode()

    def start(self) -> Recording:
        self._call("reset-recording")
        self._call("start-recording")
        return self

    def stop(self) -> list[dict]:
        text = self._call("download-recording")
        self._call("stop-recording")
        # moto writes an entry and its newline in two writes, so concurrent requests (parallel S3 part
        # uploads) can leave two entries on one line: read the entries one after another instead.
        blank = re.compile(r"\s*")
        decoder, entries, at = json.JSONDecoder(), [], blank.match(text).end()
        while at < len(text):
            entry, at = decoder.raw_decode(text, at)
            entries.append(entry)
            at = blank.match(text, at).end()
        return entries

    @staticmethod
    def sagemaker_calls(entries: list[dict], target: str) -> list[dict]:
        """Bodies of SageMaker JSON requests with `X-Amz-Target: SageMaker.<target>`."""
        import base64

        out = []
        for entry in entries:
            headers = {k.lower(): v for k, v in entry["headers"].items()}
            if headers.get("x-amz-target") == f"SageMaker.{target}":
                body = entry["body"]
                if entry.get("body_encoded"):
                    body = base64.b64decode(body).decode()
                out.append(json.loads(body))
        return out

    @staticmethod
    def s3_puts(entries: list[dict]) -> list[str]:
        return [entry["url"] for entry in entries if entry["method"] == "PUT" and "/moto-api/" not in entry["url"]]


def submit_inprocess(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in this process; return (exit code, stdout, stderr)."""
    import pytest

    from launch.submit import _main
    from titanic_lightning.command import run_command

    with pytest.raises(SystemExit) as exc:
        run_command(_main, argv)
    out, err = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else 1
    return code, out, err


def submit_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment without AWS settings, plus `env`."""
    base = clean_env()
    for key in list(base):
        if key.startswith(AWS_VARS):
            del base[key]
    base.update(env or {})
    return base


def submit_command(args: list[str]) -> list[str]:
    return [sys.executable, str(SUBMIT), *args]


def submit_subprocess(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 240):
    """Run `python launch/submit.py args...` with a clean environment (plus `env`)."""
    return subprocess.run(submit_command(args), cwd=cwd, env=submit_env(env), capture_output=True, text=True,
                          timeout=timeout)


# --- multi-process runs: `--strategy tests.ddp_probe:factory` records what each rank trained on ------

PROBE_TRAIN_ROWS, PROBE_VAL_ROWS, PROBE_EPOCHS = 101, 37, 3


def id_channels(root: Path) -> dict[str, Path]:
    """Synthetic channels whose feature column 0 is the row id (and a real signal in column 1)."""
    rng = np.random.default_rng(0)
    paths = {}
    for split, rows in (("train", PROBE_TRAIN_ROWS), ("val", PROBE_VAL_ROWS)):
        X = rng.normal(size=(rows, 4)).astype("float32")
        X[:, 0] = np.arange(rows)
        y = (X[:, 1] + 0.5 * rng.normal(size=rows) > 0).astype("int64")
        paths[split] = root / split
        paths[split].mkdir(parents=True)
        np.savez(paths[split] / f"{split}_data.npz", **{f"X_{split}": X, f"y_{split}": y})
    return paths


def train_args(channels: dict[str, Path] | None, *extra: str) -> list[str]:
    """The probe run's flags; with channels None the data comes from SM_CHANNEL_TRAIN/VAL."""
    data = ["--train", str(channels["train"]), "--val", str(channels["val"])] if channels else []
    return [*data, "--epochs", str(PROBE_EPOCHS), "--early_stopping", "false", "--batch_size", "8", "--hidden_sizes", "[8]",
            "--strategy", "tests.ddp_probe:factory", "--process_group_timeout", "30", *extra]


def sagemaker_host_env(host: str, tmp: Path, port: int, probe: Path, hosts=("algo-1", "algo-2"),
                       **extra: str) -> dict[str, str]:
    """The environment SageMaker gives `host` of a CPU job whose hosts meet on 127.0.0.1:`port`."""
    return clean_env(
        SM_HOSTS=json.dumps(list(hosts)), SM_CURRENT_HOST=host, SM_MASTER_ADDR="127.0.0.1",
        SM_MASTER_PORT=str(port), SM_NUM_GPUS="0", SM_NUM_CPUS="1", SM_MODEL_DIR=str(tmp / host / "model"),
        SM_OUTPUT_DATA_DIR=str(tmp / host / "output"), PROBE_DIR=str(probe), OMP_NUM_THREADS="1", **extra,
    )


def start(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """`python argv...` in the background, stdout and stderr together."""
    return subprocess.Popen([sys.executable, *argv], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish_all(procs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str]]:
    """Wait for every process: [(exit code, output)]; all are killed if one outlasts `timeout`."""
    results = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        results.append((proc.returncode, out))
    return results


def check_probe(probe: Path, model_dir: Path, channels: dict[str, Path], world: int = 2) -> None:
    """The probe's records prove real data parallelism, and the saved metrics are the whole split's."""
    import pytest
    import torch
    from torchmetrics.functional.classification import binary_accuracy, binary_auroc

    from titanic_lightning.model.network import MLP

    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in range(world)]
    assert sorted(p.name for p in probe.iterdir()) == sorted(f"rank{r}.json" for r in range(world))
    assert [r["world_size"] for r in ranks] == [world] * world
    # Same number of steps on every rank, and identical parameters at the end: gradients were averaged.
    assert {r["steps"] for r in ranks} == {PROBE_EPOCHS * int(np.ceil(np.ceil(PROBE_TRAIN_ROWS / world) / 8))}
    for other in ranks[1:]:
        for key, values in ranks[0]["params"].items():
            np.testing.assert_array_equal(values, other["params"][key], err_msg=key)
    for epoch in map(str, range(PROBE_EPOCHS)):
        seen = [r["rows"][epoch] for r in ranks]
        assert len({len(rows) for rows in seen}) == 1
        assert set().union(*seen) == set(range(PROBE_TRAIN_ROWS))  # together: the whole training split
        assert sum(map(len, seen)) - PROBE_TRAIN_ROWS <= world - 1  # apart: disjoint but for world_size - 1 padding rows
    assert ranks[0]["rows"]["0"] != ranks[0]["rows"]["1"]  # reshuffled every epoch

    # The reported validation metrics are those of all ranks together: they equal a single-process
    # evaluation of the saved weights on the whole validation split.
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["world_size"] == world
    saved = torch.load(model_dir / "model.pt", weights_only=True)
    net = MLP(saved["hyperparameters"]["input_size"], saved["hyperparameters"]["hidden_sizes"])
    net.load_state_dict(saved["state_dict"])
    with np.load(channels["val"] / "val_data.npz") as npz:
        X, y = torch.from_numpy(npz["X_val"]), torch.from_numpy(npz["y_val"]).float()
    with torch.no_grad():
        logits = net(X).squeeze(-1)
    assert metrics["val_loss"] == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(logits, y).item(),
                                                abs=1e-5)
    assert metrics["val_acc"] == pytest.approx(binary_accuracy(torch.sigmoid(logits), y.int()).item(), abs=1e-6)
    assert metrics["val_auroc"] == pytest.approx(binary_auroc(torch.sigmoid(logits), y.int()).item(), abs=1e-5)
    # Rank 0's final parameters are the ones saved.
    for key, values in ranks[0]["params"].items():
        np.testing.assert_allclose(saved["state_dict"][key].flatten().numpy(), values)


def fake_wheel(folder: Path, name: str, version: str = "1.0", requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel holding `name/__init__.py` with VERSION, and its dependencies."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/__init__.py", f"VERSION = {version!r}\n")
        archive.writestr(f"{info}/METADATA", metadata)
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return path


def dry_run_summary(err: str) -> dict:
    """The summary `--dry-run` prints as the last line of stderr (stdout holds the request)."""
    import json

    return json.loads(err.strip().splitlines()[-1])
