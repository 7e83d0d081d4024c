"""Commands, each run as `python -m entry.<name>`; every one is a thin shell over the library."""
