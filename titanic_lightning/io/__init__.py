"""Files this project writes: folder locks and the record of our files (`outputs`), whole-file writes
(`atomic`), and the model directory's artifacts (`artifacts`: model.pt, metrics.json, curves.png).

Importing this package imports nothing else: the serving container copies `artifacts`.
"""
