"""A scene spec's jobs on many workers, without Blender: ``python -m shape_e_blender scene``.

- jobs.py: which objects of a spec need generating (the job-key rule of core/jobkey.py), and the
  outcome of each;
- local.py: N local worker subprocesses, one per GPU, each warm, each taking the next job;
- cli.py: the command.

Every finished job is an ordinary job folder with its key, so the Blender build of the same spec
(``build.py scene SPEC -o scene.blend``) then imports them without generating anything.
"""
