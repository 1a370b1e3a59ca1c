"""The main job, headless: a prompt (or an image) becomes a mesh in a saved Blender scene, or a
scene spec (docs/scenes.md) becomes a whole scene.

    python -m shape_e_blender.blender.scene_cli --prompt "a red chair" -o chair.blend
    python -m shape_e_blender.blender.scene_cli props.toml -o props.blend

A spec is built into ``-o`` when that file exists (the objects the spec made before are updated
in place, everything else in it is kept), else into a new scene. Objects that fail are listed,
the others are saved, and the exit status is 1.

It runs Blender as a Python module (bpy), enables the add-on from this source tree (no install),
points the worker at an interpreter (by default this very one: the development venv holds the
worker's stack too), runs ``bpy.ops.shape_e.text_to_mesh(blocking=True)`` (or image_to_mesh),
prints what it created and saves the .blend.

Downloads: Blender as a module starts with online access off, and the add-on never downloads
without it. This is a command the user runs to get a mesh, so, like the worker's own CLI, it
downloads missing weights by default: it turns online access on for this process only (the
preferences are not saved) and asks the worker to fetch them, with progress. ``--no-download``
forbids that; a model that is not on disk then fails with the worker's model_unavailable error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..core.arguments import add_arguments
from ..core.errors import JOB_FAILED, ShapEError, invalid
from ..core.files import is_dir, is_file
from ..core.mesh import SIZE_HELP, check_size
from ..core.params import SETTINGS, GenerationParams
from ..core.spec import load_spec
from .console import ProgressLine, errors_unprinted, interrupts_cancel

ROOT = __package__.split(".")[0]  # the add-on's root package when run from the source tree
# The generation parameters this command takes: all but latent (shape_e.remesh decodes those).
GENERATION = [name for name in SETTINGS if name != "latent"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m shape_e_blender.blender.scene_cli",
        description="Generate a Shap-E mesh into a Blender scene and save it as a .blend file.",
    )
    ap.add_argument("spec", nargs="?", help="a scene spec (.toml) to build, instead of --prompt")
    add_arguments(ap, GENERATION, source_required=False)
    ap.add_argument("--size", type=float, metavar="M", help=f"the objects' {SIZE_HELP}")
    ap.add_argument(
        "--mark-asset",
        action="store_true",
        help="mark the objects as assets (and save them into --asset-library, when given)",
    )
    ap.add_argument("--asset-library", default="", help="the asset library folder for --mark-asset")
    ap.add_argument("-o", "--output", required=True, help="the .blend file to write")
    for kind in ("text", "image"):
        ap.add_argument(
            f"--{kind}-model",
            help=f"with a spec: the model of {kind} objects that name none (default: the "
            "spec's [defaults], then openai's)",
        )
    ap.add_argument(
        "--worker-python",
        default=sys.executable,
        help="interpreter with torch and diffusers that runs the worker (default: this one)",
    )
    ap.add_argument(
        "--worker-command",
        default="",
        help="run the worker through this command instead (e.g. ssh gpu-box ~/shape-e/bin/python "
        "-m shape_e_blender.worker)",
    )
    ap.add_argument("--jobs-dir", default="", help="where job folders go (default: Blender's)")
    ap.add_argument(
        "--no-download",
        dest="allow_download",
        action="store_false",
        help="never fetch weights from the hub (default: fetch missing ones, with progress)",
    )
    return ap.parse_args(argv)


def generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The generation parameters that were given (the source aside), under their protocol names."""
    return {
        name: getattr(args, name)
        for name in GENERATION
        if name not in ("prompt", "image") and getattr(args, name) is not None
    }


def fail(err: ShapEError) -> int:
    print(f"error: {err.message}", file=sys.stderr)
    if err.hint:
        print(f"hint: {err.hint}", file=sys.stderr)
    return 1


# With a spec, the only generation options are those a spec has no key for.
SPEC_OPTIONS = ("device", "precision")


def _spec_problem(args: argparse.Namespace) -> str:
    """What is wrong with how the command was called, given the spec or not; "" when nothing."""
    if args.spec is None:
        if args.prompt is None and args.image is None:
            return "give a scene spec (a .toml file), --prompt or --image"
        if args.text_model or args.image_model:
            return "--text-model and --image-model go with a spec; use --model with --prompt"
        return ""
    if args.prompt is not None or args.image is not None:
        return "give a scene spec or --prompt/--image, not both"
    extra = [SETTINGS[n].flag for n in generation_kwargs(args) if n not in SPEC_OPTIONS]
    extra += ["--size"] * (args.size is not None) + ["--mark-asset"] * args.mark_asset
    if extra:
        return f"{', '.join(extra)}: with a spec, set these in its [defaults] or objects"
    return ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = _spec_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    # Paths resolve where the command was typed: the worker runs in another folder, and a model
    # that is a local folder is told from a hub id by existing.
    output = Path(args.output).expanduser().resolve()
    if args.model is not None and is_dir(Path(args.model).expanduser()):
        args.model = str(Path(args.model).expanduser().resolve())
    if args.jobs_dir:
        args.jobs_dir = str(Path(args.jobs_dir).expanduser().resolve())
    if output.suffix.lower() != ".blend":
        print(f"error: the output must be a .blend file, not {output.name}", file=sys.stderr)
        return 2
    for kind in ("text_model", "image_model"):
        value = getattr(args, kind)
        if value is not None and is_dir(Path(value).expanduser()):
            setattr(args, kind, str(Path(value).expanduser().resolve()))
    if args.spec is not None:
        args.spec = str(Path(args.spec).expanduser().resolve())
    source = {"prompt": args.prompt} if args.prompt is not None else {"image": args.image}
    try:
        # Check everything before Blender starts, with the same validation the operator uses.
        if args.spec is not None:
            load_spec(
                args.spec,
                text_model=args.text_model,
                image_model=args.image_model,
                common=generation_kwargs(args),
            )
            source = {}
        params = GenerationParams.create(
            **(source or {"prompt": "spec"}), **generation_kwargs(args)
        )
        if args.size is not None:
            args.size = check_size(args.size)
        if params.device not in SETTINGS["device"].values:  # Blender's setting has no cuda:N
            raise invalid(
                "device",
                f"{params.device!r} cannot be passed to Blender's operators",
                "use auto, cuda, mps or cpu (CUDA_VISIBLE_DEVICES picks the GPU)",
            )
    except ShapEError as err:
        fail(err)
        return 2
    if args.image is not None and not is_file(args.image):
        print(f"error: no image file at {args.image}", file=sys.stderr)
        return 2

    # Loading Blender takes seconds: only once the arguments are known to be good.
    import addon_utils
    import bpy

    if args.spec is not None and is_file(output):
        # A spec is built into the file it made before: its objects are updated in place.
        bpy.ops.wm.open_mainfile(filepath=str(output), load_ui=False)
    else:
        # The factory scene (camera and light), without its cube: the new mesh takes its place.
        bpy.ops.wm.read_homefile(use_factory_startup=True)
        cube = bpy.data.objects.get("Cube")
        if cube is not None:
            bpy.data.objects.remove(cube)

    # ``-m`` already imported the package; without this stamp addon_utils would reload it.
    package = sys.modules[ROOT]
    package.__time__ = Path(__file__).parents[1].joinpath("__init__.py").stat().st_mtime  # type: ignore[attr-defined]
    errors: list[BaseException] = []
    # enable() returns the module, or None when it failed; the stubs say None only.
    enabled = addon_utils.enable(ROOT, default_set=True, handle_error=errors.append)  # type: ignore[func-returns-value]
    if enabled is None:
        print(
            f"error: the add-on did not register: {errors[0] if errors else '?'}", file=sys.stderr
        )
        return 1
    try:
        _set_up(bpy, args)
        if args.spec is not None:
            return _build(bpy, args, output)
        return _generate(bpy, args, source, output)
    except ShapEError as err:
        return fail(err)
    except KeyboardInterrupt:
        return _interrupted()
    finally:
        addon_utils.disable(ROOT, default_set=True)


def _interrupted() -> int:
    print("interrupted: nothing was saved; finished jobs are kept and reused", file=sys.stderr)
    return 130


def _set_up(bpy: Any, args: argparse.Namespace) -> None:
    """The preferences for this process (module mode never saves them) and the progress."""
    from . import prefs, tasks  # they import bpy, loaded by main() only after validation

    p = prefs.get(bpy.context)
    p.worker_python = str(Path(args.worker_python).expanduser())
    p.worker_command = args.worker_command
    p.jobs_dir = args.jobs_dir
    p.asset_library = (
        str(Path(args.asset_library).expanduser().resolve()) if args.asset_library else ""
    )
    for name in SPEC_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            setattr(p, name, SETTINGS[name].identifier(value))
    if args.allow_download:
        bpy.context.preferences.system.use_online_access = True
    tasks.watch = ProgressLine(sys.stderr).show
    print(f"worker: {p.worker_command or p.worker_python}; jobs: {prefs.jobs_root(p)}", flush=True)


def _build(bpy: Any, args: argparse.Namespace, output: Path) -> int:
    """A spec into the scene; saved with what succeeded, and 1 when an object failed."""
    from . import scenes, tasks  # bpy: imported once main() has checked the arguments

    started = time.perf_counter()
    try:
        with errors_unprinted(), interrupts_cancel(tasks) as interrupted:
            result = bpy.ops.shape_e.build_scene(
                filepath=args.spec,
                text_model=args.text_model or "",
                image_model=args.image_model or "",
                blocking=True,
            )
    except RuntimeError:  # background mode raises the operator's error report
        result = {"CANCELLED"}
    tasks.watch = None
    if interrupted:
        return _interrupted()
    built = scenes.last_build
    for name, how in built.items():
        if how["error"]:
            print(f"{name}: failed", flush=True)
            continue
        objects = ", ".join(
            f"{n} ({len(bpy.data.objects[n].data.vertices)} vertices)" for n in how["objects"]
        )
        print(f"{name}: {how['how']}: {objects}; job folder {how['job_dir']}", flush=True)
    st = tasks.status
    if result != {"FINISHED"}:
        fail(ShapEError(JOB_FAILED, st.error or st.message or "the build failed", st.hint))
    if not built or st.state == "cancelled":
        return 1  # nothing was imported: the file is left as it was
    print(f"built in {time.perf_counter() - started:.1f} s")
    output.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(output))
    print(f"saved {output}")
    return 0 if result == {"FINISHED"} else 1


def _generate(bpy: Any, args: argparse.Namespace, source: dict[str, str], output: Path) -> int:
    from . import tasks  # bpy: imported once main() has checked the arguments

    kwargs = {name: SETTINGS[name].identifier(v) for name, v in generation_kwargs(args).items()}
    if args.size is not None:
        kwargs["size"] = args.size
    kwargs["mark_asset"] = args.mark_asset
    started = time.perf_counter()
    if args.prompt is not None:
        op = bpy.ops.shape_e.text_to_mesh
        kwargs["prompt"] = source["prompt"]
    else:
        op = bpy.ops.shape_e.image_to_mesh
        kwargs["filepath"] = str(Path(source["image"]).resolve())
    try:
        with errors_unprinted(), interrupts_cancel(tasks) as interrupted:
            result = op(blocking=True, allow_download=args.allow_download, **kwargs)
    except RuntimeError:
        # Background mode turns the operator's error report into this exception; the message
        # and its hint are in the add-on's status.
        result = {"CANCELLED"}
    if interrupted:
        return _interrupted()
    if result != {"FINISHED"}:
        st = tasks.status
        message = st.error or st.message or "the generation failed"
        return fail(ShapEError(JOB_FAILED, message, st.hint))
    done = tasks.last()
    for name in tasks.status.objects:
        obj = bpy.data.objects[name]
        print(f"{name}: {len(obj.data.vertices)} vertices, {len(obj.data.polygons)} faces")
    if done is not None and isinstance(done.requests[0].result, dict):
        print(f"job folder: {done.requests[0].result.get('job_dir')}")
    print(f"generated in {time.perf_counter() - started:.1f} s")
    output.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(output))
    print(f"saved {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
