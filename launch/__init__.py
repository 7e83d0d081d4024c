"""Launch the training entry as a SageMaker training job, or emulate one on this machine.

Run `python launch/submit.py --help`. Modules, one role each:

* `instances` — the ml.* instance types this launcher knows (vCPUs, GPUs);
* `prices` — the dated on-demand price table (`prices.json`) and cost arithmetic;
* `job` — the job specification shared by `--dry-run`, a real submission and `--local`;
* `code` — stages the code the job ships (titanic_lightning/, entry/, requirements.txt);
* `s3data` — prepares the npz channels and uploads them, skipping unchanged objects;
* `remote` — builds the SDK's ModelTrainer from a spec and submits it;
* `local` — runs the job the way SageMaker would, one subprocess per host, without Docker;
* `report` — the after-job summary, `runs/<job>.json` and `--compare`;
* `console` — the progress lines every step prints on stderr, and the argument parser of submit.py and deploy.py.
"""
