"""The managed worker environment's setup (client/envsetup.py), without Blender."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from shape_e_blender.client.envsetup import (
    EnvSetup,
    lock_name,
    machine_variant,
    requirements_for_machine,
    vendor_dir,
)
from shape_e_blender.client.process import venv_python
from shape_e_blender.core.errors import CANCELLED, JOB_FAILED
from tests.support import REPO


def test_requirements_for_this_machine_are_its_lock_or_else_its_pins():
    folder = vendor_dir()
    assert (folder / "base.txt").is_file()
    chosen = requirements_for_machine(folder)
    lock = folder / lock_name(machine_variant())
    assert chosen.parent == folder and lock.name in {f"{name}.lock.txt" for name in BUILD.LOCKS}
    if lock.is_file():
        assert chosen == lock
    else:  # a torch build from PyTorch's index, not locked in this build: its pins, unhashed
        assert chosen.name == lock.name.removesuffix(".lock.txt") + ".txt" and chosen.is_file()


def test_a_machine_without_a_lock_installs_its_pins_without_hash_checking_and_says_so(tmp_path):
    folder = tmp_path / "worker"
    shutil.copytree(vendor_dir(), folder)
    lock = folder / lock_name(machine_variant())
    lock.unlink(missing_ok=True)
    chosen = requirements_for_machine(folder)
    assert chosen.name == lock.name.removesuffix(".lock.txt") + ".txt"
    install = dict(EnvSetup(tmp_path / "env", chosen).commands())["installing"]
    assert "--require-hashes" not in install and install[-2:] == ["-r", str(chosen)]
    setup = EnvSetup(tmp_path / "env", lambda: chosen, base_python=str(tmp_path / "no-python"))
    setup.start()
    while not setup.poll(timeout=0.2):
        pass
    assert any("without hash checking" in line for line in setup.tail)


def test_env_setup_creates_a_venv_that_runs(tmp_path):
    # An empty requirements file keeps this offline; the real pins install the same way.
    req = tmp_path / "req.txt"
    req.write_text("# nothing to install\n")
    setup = EnvSetup(tmp_path / "env", req, verify=("json", "sqlite3")).start()
    setup.join(180)
    assert setup.poll() and setup.error is None, setup.error
    assert setup.fraction == 1.0 and setup.stage == "checking"
    assert venv_python(tmp_path / "env").is_file()
    assert setup.last_line == "ok"
    # Made from the Python that runs the add-on (Blender's own): 3.13 under Blender 5.1 and later.
    made = subprocess.run(
        [venv_python(tmp_path / "env"), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert made.stdout.strip() == str(sys.version_info[:2])


def test_env_setup_failure_keeps_the_tail_and_a_hint(tmp_path):
    req = tmp_path / "req.txt"
    req.write_text("--no-such-pip-option\n")
    setup = EnvSetup(tmp_path / "env", req, verify=()).start()
    setup.join(180)
    assert setup.poll() and setup.error is not None
    assert setup.error.code == JOB_FAILED and setup.stage == "installing"
    assert "no-such-pip-option" in setup.error.message
    assert "worker_python" in setup.error.hint


def test_env_setup_cancel_stops_the_subprocess_and_its_thread_reaps_it(tmp_path):
    req = tmp_path / "req.txt"
    req.write_text("")
    setup = EnvSetup(tmp_path / "env", req).start()
    deadline = time.monotonic() + 60
    while setup._proc is None:  # "python -m venv" is running
        assert time.monotonic() < deadline and setup.is_alive()
        time.sleep(0.01)
    setup.cancel()  # the Cancel button
    setup.join(60)
    assert not setup.is_alive()
    assert setup._proc.poll() is not None  # the setup's thread reaped what it started
    assert setup.poll() and setup.error is not None and setup.error.code == CANCELLED


def test_env_setup_picks_its_requirements_on_its_own_thread(tmp_path):
    # The operator passes requirements_for_machine (it runs nvidia-smi, which can take seconds)
    # as a function, so that the UI thread never runs it.
    req = tmp_path / "req.txt"
    req.write_text("# nothing to install\n")
    picked_on: list[threading.Thread] = []
    chosen: list[Path] = []

    def pick() -> Path:
        picked_on.append(threading.current_thread())
        chosen.append(requirements_for_machine(vendor_dir()))  # the probe
        return req  # an empty file keeps this test offline

    setup = EnvSetup(tmp_path / "env", pick, verify=())
    assert setup.requirements is None  # not known before the thread runs
    setup.start().join(180)
    assert setup.poll() and setup.error is None, setup.error
    assert [t.name for t in picked_on] == ["shape_e-setup"]
    assert chosen[0].parent == vendor_dir() and chosen[0].is_file()
    assert setup.requirements == req


# --- The hash locks (vendor/worker/*.lock.txt) and pip's hash-checking mode ---

HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*(?:;\s*(.+?))?\s*$")
# Locks that need PyTorch's own index, which the machine that wrote the others could not reach:
# `python build.py lock cpu cuda` where it is reachable writes them (vendor/README.md).
NEEDS_PYTORCH_INDEX = {"cpu", "cuda"}


def _build_py() -> Any:
    """build.py as a module: LOCKS, source_lines and sources_digest are defined once, there."""
    spec = importlib.util.spec_from_file_location("build_py", REPO / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_py", module)  # dataclasses look the module up
    spec.loader.exec_module(module)
    return module


BUILD = _build_py()


@dataclass
class Locked:
    name: str  # canonical
    version: str
    marker: str | None
    hashes: list[str]


def read_lock(path: Path) -> tuple[list[str], list[Locked]]:
    """A lock's option lines and its pins, backslash continuations joined, comments out."""
    options: list[str] = []
    pins: list[Locked] = []
    for logical in path.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        line = logical.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            options.append(line)
            continue
        requirement, _, rest = line.partition(" --hash=")
        match = PIN.match(requirement)
        assert match, f"{path.name}: not name==version: {line[:120]}"
        hashes = HASH.findall("--hash=" + rest) if rest else []
        name, version, marker = match.groups()
        pins.append(Locked(canonicalize_name(name), version, marker, hashes))
    return options, pins


def lock_drift(folder: Path, name: str) -> list[str]:
    """How NAME.lock.txt in ``folder`` differs from the pins of NAME.txt; empty when current."""
    lock, source = folder / f"{name}.lock.txt", folder / f"{name}.txt"
    text = lock.read_text(encoding="utf-8")
    stamp = re.search(r"^# sources sha256: ([0-9a-f]{64})$", text, re.M)
    drift = []
    if stamp is None or stamp.group(1) != BUILD.sources_digest(source):
        drift.append(f"{source.name} (or a file it includes) changed since {lock.name} was written")
    _, pins = read_lock(lock)
    locked = {p.name: Version(p.version).public for p in pins}
    for line in BUILD.source_lines(source):
        if line.startswith("-"):
            continue
        pin = Requirement(line)
        (spec,) = pin.specifier
        got = locked.get(canonicalize_name(pin.name))
        if spec.operator != "==" or got != Version(spec.version).public:
            drift.append(f"{line} is locked as {pin.name}=={got}")
    return drift


def lock_param(name: str) -> Any:
    if name not in NEEDS_PYTORCH_INDEX:
        return name
    why = f"{name}.lock.txt needs download.pytorch.org: `python build.py lock {name}` there"
    return pytest.param(
        name, marks=pytest.mark.xfail(raises=FileNotFoundError, strict=True, reason=why)
    )


LOCK_NAMES = [lock_param(name) for name in BUILD.LOCKS]


def test_each_variant_on_each_os_installs_the_lock_of_its_torch_build():
    # PyPI's torch is the MPS build on macOS, a CUDA build on Linux, the CPU build on Windows.
    assert lock_name("mps", "darwin") == "pypi.lock.txt"
    assert lock_name("cuda", "linux") == "pypi.lock.txt"
    assert lock_name("cpu", "win32") == "pypi.lock.txt"
    # Elsewhere the build comes from PyTorch's index: the CPU build on Linux, CUDA on Windows.
    assert lock_name("cpu", "linux") == "cpu.lock.txt"
    assert lock_name("cuda", "win32") == "cuda.lock.txt"
    machines = [("mps", "darwin"), *((v, s) for v in ("cpu", "cuda")
                                      for s in ("darwin", "linux", "win32"))]  # fmt: skip
    stems = {lock_name(v, s).removesuffix(".lock.txt") for v, s in machines}
    assert stems <= set(BUILD.LOCKS)  # build.py lock writes each of them
    for stem in stems:
        assert (vendor_dir() / f"{stem}.txt").is_file()  # the human-readable source


@pytest.mark.parametrize("name", LOCK_NAMES)
def test_every_package_in_the_lock_is_pinned_with_a_hash(name):
    options, pins = read_lock(vendor_dir() / f"{name}.lock.txt")
    assert len(pins) > 40  # torch, diffusers and transformers pull in many
    for pin in pins:
        assert pin.hashes, f"{pin.name}=={pin.version} has no --hash"
        if pin.marker:
            Marker(pin.marker)  # pip must be able to read it
    for option in options:  # where torch comes from; nothing else changes pip's behaviour
        assert option.startswith("--extra-index-url https://download.pytorch.org/whl/"), option


@pytest.mark.parametrize("name", LOCK_NAMES)
def test_the_lock_holds_the_dependencies_of_what_it_pins(name):
    # The dependencies that this environment's own installs declare, followed from the pins (the
    # test environments run the same pins): each must be in the lock at a version it accepts.
    folder = vendor_dir()
    _, pins = read_lock(folder / f"{name}.lock.txt")
    here = {}
    for pin in pins:
        if pin.marker is None or Marker(pin.marker).evaluate():
            here[pin.name] = Version(pin.version)
    todo = [(Requirement(line).name, frozenset[str]()) for line in BUILD.source_lines(
        folder / f"{name}.txt") if not line.startswith("-")]  # fmt: skip
    seen, followed = set(), []
    while todo:
        dist_name, extras = todo.pop()
        key = (canonicalize_name(dist_name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(dist.version).public != here[key[0]].public:
            continue  # another version here: its dependencies may differ
        followed.append(key[0])
        for line in dist.requires or []:
            dep = Requirement(line)
            wanted = dep.marker is None or any(
                dep.marker.evaluate({"extra": extra}) for extra in {"", *extras}
            )
            if not wanted:
                continue
            got = here.get(canonicalize_name(dep.name))
            assert got is not None, f"{dep.name} ({dist.name} needs it) is not in {name}.lock.txt"
            assert dep.specifier.contains(got, prereleases=True), (line, dist.name, str(got))
            todo.append((dep.name, frozenset(dep.extras)))
    assert followed, "none of the lock's versions is installed here"


@pytest.mark.parametrize("name", LOCK_NAMES)
def test_the_lock_is_current_with_the_pins(name):
    # One definition: the pins live in base.txt and torch.txt; the lock must follow them.
    assert lock_drift(vendor_dir(), name) == [], f"run `python build.py lock {name}`"


def test_a_changed_pin_shows_as_a_stale_lock(tmp_path):
    folder = tmp_path / "worker"
    shutil.copytree(vendor_dir(), folder)
    assert lock_drift(folder, "pypi") == []
    base = folder / "base.txt"
    pin = next(line for line in base.read_text().splitlines() if "==" in line)
    base.write_text(base.read_text().replace(pin, pin + ".post1"))  # a pin moves on
    drift = lock_drift(folder, "pypi")
    assert len(drift) == 2 and "pypi.txt (or a file it includes)" in drift[0]
    assert drift[1].startswith(f"{pin}.post1 is locked as")


def test_setup_installs_the_lock_in_hash_checking_mode_wheels_only(tmp_path):
    lock = vendor_dir() / "pypi.lock.txt"
    install = dict(EnvSetup(tmp_path / "env", lock).commands())["installing"]
    assert install[1:4] == ["-m", "pip", "install"]
    assert "--require-hashes" in install
    assert install[install.index("--only-binary") + 1] == ":all:"
    assert install[-2:] == ["-r", str(lock)]


def _wheel(folder: Path, name: str, requires: tuple[str, ...] = (), version: str = "1.0") -> Path:
    """A real, minimal pure-Python wheel of ``name`` (importable as ``name``)."""
    dist_info = f"{name}-{version}.dist-info"
    meta = "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{meta}",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = ""
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record += f"{path},sha256={digest.decode()},{len(text.encode())}\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{dist_info}/RECORD", record + f"{dist_info}/RECORD,,\n")
    return wheel


def _offline_lock(tmp_path: Path, wheels: list[Path], hashes: list[str]) -> Path:
    """A lock like vendor/worker's, of local wheels: pip reads no index (the test is offline)."""
    lines = ["--no-index", f"--find-links {wheels[0].parent}"]
    for wheel, digest in zip(wheels, hashes, strict=True):
        lines.append(f"{wheel.name.split('-')[0]}==1.0 \\\n    --hash=sha256:{digest}")
    lock = tmp_path / "probe.lock.txt"
    lock.write_text("\n".join(lines) + "\n")
    return lock


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _setup(tmp_path: Path, lock: Path, verify: tuple[str, ...]) -> EnvSetup:
    setup = EnvSetup(tmp_path / "env", lock, verify=verify).start()
    setup.join(180)
    assert setup.poll()
    return setup


def test_a_hash_locked_wheel_installs_and_imports(tmp_path):
    (tmp_path / "wheels").mkdir()
    wheel = _wheel(tmp_path / "wheels", "shape_e_lock_probe")
    setup = _setup(tmp_path, _offline_lock(tmp_path, [wheel], [_sha256(wheel)]),
                   verify=("shape_e_lock_probe",))  # fmt: skip
    assert setup.error is None, setup.error
    assert setup.last_line == "ok"  # the check step imported it from the new environment


def test_a_wheel_that_does_not_match_its_hash_is_not_installed_and_the_error_says_why(tmp_path):
    (tmp_path / "wheels").mkdir()
    wheel = _wheel(tmp_path / "wheels", "shape_e_lock_probe")
    altered = _sha256(wheel)[:-1] + ("0" if _sha256(wheel)[-1] != "0" else "1")
    setup = _setup(tmp_path, _offline_lock(tmp_path, [wheel], [altered]),
                   verify=("shape_e_lock_probe",))  # fmt: skip
    assert setup.error is not None and setup.error.code == JOB_FAILED
    assert setup.stage == "installing"
    message = setup.error.message
    assert "does not match its sha256 in probe.lock.txt" in message
    assert f"Expected sha256 {altered}" in message  # pip's own lines, in the tail
    assert "Set Up again" in setup.error.hint and "worker_python" in setup.error.hint
    probe = subprocess.run([venv_python(tmp_path / "env"), "-c", "import shape_e_lock_probe"],
                           capture_output=True, check=False)  # fmt: skip
    assert probe.returncode != 0  # nothing of it was installed


def test_a_dependency_left_out_of_the_lock_fails_the_setup(tmp_path):
    # Hash-checking mode covers dependencies too: one the lock does not pin is refused.
    (tmp_path / "wheels").mkdir()
    _wheel(tmp_path / "wheels", "shape_e_lock_dep")
    wheel = _wheel(tmp_path / "wheels", "shape_e_lock_probe", requires=("shape_e_lock_dep",))
    setup = _setup(tmp_path, _offline_lock(tmp_path, [wheel], [_sha256(wheel)]), verify=())
    assert setup.error is not None and setup.stage == "installing"
    assert "probe.lock.txt does not pin every package with a hash" in setup.error.message
    assert "shape_e_lock_dep" in setup.error.message  # pip names it
    assert "reinstall the extension" in setup.error.hint


def test_a_pinned_version_without_a_wheel_for_this_python_fails_the_setup(tmp_path):
    # As numpy 1.26.4 on Python 3.13: other versions exist, the pinned one only for other tags.
    (tmp_path / "wheels").mkdir()
    wheel = _wheel(tmp_path / "wheels", "shape_e_lock_probe")
    other_tag = wheel.rename(wheel.with_name("shape_e_lock_probe-1.0-cp20-cp20-any.whl"))
    _wheel(tmp_path / "wheels", "shape_e_lock_probe", version="2.0")
    setup = _setup(tmp_path, _offline_lock(tmp_path, [wheel], [_sha256(other_tag)]), verify=())
    assert setup.error is not None and setup.stage == "installing"
    assert "probe.lock.txt pins a version that has no wheel for this Python" in setup.error.message
    assert "shape_e_lock_probe==1.0" in setup.error.message  # pip names it
    assert "worker_python" in setup.error.hint


def test_a_lock_missing_from_the_extension_fails_before_anything_is_made(tmp_path):
    setup = _setup(tmp_path, tmp_path / "cpu.lock.txt", verify=())
    assert setup.error is not None and setup.error.code == JOB_FAILED
    assert "cpu.lock.txt" in setup.error.message and "build.py lock" in setup.error.message
    assert "vendor/worker/cpu.txt" in setup.error.hint and "worker_python" in setup.error.hint
    assert not (tmp_path / "env").exists()
