"""titanic-lightning: a Lightning MLP for the Titanic data that runs unchanged on a laptop CPU,
one GPU, or several SageMaker instances.

Modules, one role each:
    contracts    names every part agrees on: splits, channel and artifact files, metrics (imports nothing)
    sagemaker_facts  what SageMaker's containers fix: /opt/ml paths, limits, host names (imports nothing)
    dependencies pyproject.toml's dependency bounds, read when requirements are written
    errors       user-facing errors and exit codes (imports nothing of the project)
    environment  the only reader of the process environment (SageMaker, torchrun, paths)
    command      the wrapper every command runs under: one line per error, SageMaker's failure file
    csv_source   finding, downloading and verifying the Titanic CSV
    features     the fitted, serialisable passenger → feature transform
    prepare      CSV → split → npz channels + preprocessing.json
    config       every command's flags (torch-free, so --help is instant)
    layout       where a training run reads and writes, resolved from flags and environment
    data         npz channels → in-memory tensor batches (LightningDataModule)
    network      the MLP, a plain nn.Module (all that scoring needs)
    model        the LightningModule that trains it: loss, optimiser, metrics
    strategies   DDP / smddp / FSDP / custom strategies and the SageMaker cluster environment
    callbacks    the callbacks every run carries and the `name=value;` metric lines they print
    lightning_run  the DataModule, LightningModule and Trainer of a run; fit, evaluate, save
    training     train(cfg) -> TrainResult: one whole run as a function (entry.train, bench)
    resume       writing last.ckpt (by epoch, by time, on SIGTERM) and resuming from it
    artifacts    model.pt / metrics.json / code/ / curves.png, written as a set
    outputs      the locks a command holds on the folders it writes and reads, and which files there are its own
    atomic       whole-or-nothing output files inside their folder; removing a killed writer's leftovers
    model_source a model directory, model.pt, model.tar.gz or s3:// URI → model.pt
    scoring      raw passenger rows → probabilities with a saved model
    predict      batch prediction to CSV (entry.predict)
    export       TorchScript / ONNX files with the preprocessing inside (entry.export)
    serving      the SageMaker serving handler written into model/code/
"""

__version__ = "0.1.0"
