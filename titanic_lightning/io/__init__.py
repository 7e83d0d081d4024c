"""Files this project writes: folder locks and the record of our files (`outputs`), whole-file writes
(`atomic`), the model directory's artifacts (`artifacts`: model.pt, metrics.json, curves.png), and
`make clean`, which removes only the files those records name (`clean`).

Importing this package imports nothing else: the serving container copies `artifacts`.
"""
