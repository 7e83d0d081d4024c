"""Files this project writes: folder locks (`locks`) and records of our files (`outputs`), whole-file writes
(`atomic`), the model directory (`artifacts`) and `make clean` (`clean`). Imports nothing: the serving
container copies `artifacts`.
"""
