"""What SageMaker's training containers fix, and this project relies on, written once.

Read by the entry (`environment`, `strategies`) and by the launcher (`launch/`), which submits jobs
to those containers or emulates them (`--local`). Imports nothing.
"""

from __future__ import annotations

OPT_ML = "/opt/ml"
# Synced to the job's checkpoint S3 URI and restored on a (spot) restart; named in no variable.
CHECKPOINT_DIR = f"{OPT_ML}/checkpoints"
OUTPUT_DIR = f"{OPT_ML}/output"
# How much of output/failure becomes the job's FailureReason.
FAILURE_REASON_LIMIT = 1024
# Hosts are named algo-1..N; the driver's default rendezvous port when SM_MASTER_PORT is unset.
FIRST_HOST = "algo-1"
MASTER_PORT = 7777
# The longest training job (MaxRuntimeInSeconds): 28 days.
LONGEST_JOB_S = 28 * 24 * 3600
