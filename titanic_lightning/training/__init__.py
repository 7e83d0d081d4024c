"""A training run: `train.train(cfg)` reads top to bottom (layout, plan, DataModule, LightningModule,
Trainer, fit, evaluate, save). Beside it: where the run reads and writes (`layout`), where the
process sits in a cluster (`cluster`), the strategies by name (`strategies`), the callbacks and
their metric lines (`callbacks`), and checkpoints to resume from (`checkpoints`).

Importing this package imports nothing else.
"""
