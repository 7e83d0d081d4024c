"""The data: the Titanic CSV found or fetched (`csv_source`), its columns checked (`columns`), turned into
features fitted on the training rows only (`features`), split and saved as npz channels (`prepare`), and
read back into batches (`channels`, `datamodule`). Imports nothing: the serving container copies parts.
"""
