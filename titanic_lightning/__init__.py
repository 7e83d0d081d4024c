"""titanic-lightning: a Lightning MLP for the Titanic data that runs unchanged on a laptop CPU,
one GPU, or several SageMaker instances.

Subpackages by role, each module with one:

    data/      the Titanic CSV → checked columns → fitted features → npz channels → batches
               csv_source, columns, features, prepare (entry.prepare), channels, datamodule (LightningDataModule)
    model/     network (the plain nn.Module MLP), module (the LightningModule), parallel (tensor parallelism)
    training/  train (train(cfg): layout, plan, Trainer, fit, evaluate, save: what entry.train runs),
               layout (where a run reads and writes), cluster (Lightning's cluster environments and
               SageMaker's → the plan), strategies, callbacks (and the `name=value;` lines), checkpoints
    io/        outputs (folder locks, which files are ours), atomic (whole-file writes), artifacts
               (model.pt, metrics.json, curves.png), clean (make clean)
    serving/   the SageMaker handler written into model/code/ (inference), scoring, predict
               (entry.predict), export (entry.export), model_source (a model from a folder, tar or S3)

And beside them: config (every command's flags, torch-free), command (one line per error, exit
codes), environment (environment variables as defaults), errors, contracts (names every part
agrees on), sagemaker_facts, dependencies (pyproject's bounds).
"""

__version__ = "0.1.0"
