"""The data: the Titanic CSV found or fetched (`csv_source`), its columns checked (`columns`), turned
into features fitted on the training rows only (`features`), split and saved as npz channels
(`prepare`, `python -m entry.prepare`), and read back into batches (`channels`, `datamodule`).

Importing this package imports nothing else: the serving container copies `columns` and `features`.
"""
