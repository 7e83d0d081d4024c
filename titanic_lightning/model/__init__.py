"""The model: the plain MLP (`network`), the LightningModule that trains it (`module`), and its
split over processes under tensor parallelism (`parallel`).

Importing this package imports nothing else: the serving container copies `network` without Lightning.
"""
