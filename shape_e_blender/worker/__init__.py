"""Worker process only: never imported by Blender.

- ``server``: the protocol loop (``python -m shape_e_blender.worker``); ``cli``: the headless CLI;
- ``engine``: one generation or one download, start to finish. The server and the CLI import it
  when a job needs it, so that neither waits for torch before then;
- ``hub/``: weights from folders and the hub; ``models/``: devices, weight files, loading, cache;
  ``sampling``: the prior; ``inputs``: the files a job reads; ``mesh/``: field to mesh files;
  ``tiny/``: tiny random pipelines for tests; ``logs`` and ``paths``: job logs, the jobs root.
"""
