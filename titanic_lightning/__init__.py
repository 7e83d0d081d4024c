"""titanic-lightning: a Lightning MLP for the Titanic data that runs unchanged on a laptop CPU,
one GPU, or several SageMaker instances.

Modules, one role each:
    errors       user-facing errors and the command wrapper that turns them into one line
    environment  the only reader of the process environment (SageMaker, torchrun, paths)
    csv_source   finding, downloading and verifying the Titanic CSV
    features     the fitted, serialisable passenger → feature transform
    prepare      CSV → split → npz channels + preprocessing.json
    config       the training command line (torch-free, so --help is instant)
    data         npz channels → in-memory tensor batches (LightningDataModule)
    model        the MLP and the LightningModule that trains it
    trainer      callbacks, loggers and the Trainer
    artifacts    model.pt / metrics.json / curves.png, written atomically
"""

__version__ = "0.1.0"
