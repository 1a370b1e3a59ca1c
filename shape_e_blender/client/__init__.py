"""The add-on's side of the worker, without bpy: start the worker, talk to it, stop it.

- process.py: the interpreter, its clean environment, process groups, killing a process tree;
- transport.py: one worker process, the threads that read its pipes, its log;
- handle.py: JobHandle (one request and its answer) and the events poll() returns;
- client.py: WorkerClient (ids, routing, the version check, restarts, shutdown);
- envsetup.py: creating the managed worker environment (a venv with the pinned requirements).

Standard library and core only, so it imports and is tested in any Python. Blender's side keeps
only the timer that polls it and the UI state (blender/tasks.py).
"""
