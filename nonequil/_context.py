"""Process-wide facts about the verb now running (kept light: ``nonequil --help`` imports it).

``COMMAND_LINE``: the command line of the ``nonequil`` verb running in this process, set by
``nonequil.cli.main`` for the duration of the call.  ``main`` may run in-process with its own
argv (tests, sweeps, experiments, Dask workers), where ``sys.argv`` names the host program
instead; provenance records this value, and ``sys.argv`` only outside the CLI (None here).
"""
COMMAND_LINE = None
