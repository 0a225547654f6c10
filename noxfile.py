"""The test matrix: the tests marked ``matrix`` on every supported environment.

scripts/test runs every cell here (``nox --parallel 2``), then the whole suite once in .venv.
The ``dist`` session snapshots the tree and builds the project's wheel from it; each cell is a
fresh virtualenv with that wheel installed (not editable, so packaging is checked too) plus only
what the cell needs, and runs its tests from a copy of the snapshot without the source packages,
so the installed okq is the one imported.  The cells:

- ``oldest_deps``: oldest CPython, every extra at its lower bound in pyproject.toml (hiredis,
  trio and redis-py: ``redis==5.0`` installs 5.0.0);
- ``tests-3.X``: each CPython the classifiers in pyproject.toml list, with the hiredis, trio and
  redis extras at their newest releases (the newest redis-py is tested here);
- ``uvloop``: newest CPython, every ``asyncio.run`` of the tests on uvloop's loop;
- ``no_hiredis``: newest CPython, without hiredis, so the pure decoder is the default.

The subset is chosen by path in tests/conftest.py (``MATRIX_TESTS``); each cell states what it
installed in ``OKQ_TEST_EXPECT`` and tests/test_environment.py checks it.

Interpreters are found on ``PATH`` or under ``$PYENV_ROOT/versions`` (default ``~/.pyenv``) and
never downloaded.  A missing one fails its cells under ``CI``; elsewhere they are skipped, loudly.

    nox -l                      # list the cells
    nox -s tests-3.12           # one cell (and dist, which it requires)
    nox --parallel 2            # every cell, two at a time
    nox -s uvloop -- -x -k sync # extra arguments go to that cell's pytest
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nox
from packaging.requirements import Requirement

nox.needs_version = ">=2025.5.1"
nox.options.error_on_missing_interpreters = "CI" in os.environ
nox.options.download_python = "never"
nox.options.default_venv_backend = "virtualenv"

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PROJECT = PYPROJECT["project"]
#: The source packages: left out of the tree the cells run their tests in.
PACKAGES: list[str] = PYPROJECT["tool"]["setuptools"]["packages"]

#: Every CPython the classifiers claim, oldest first.
PYTHONS: list[str] = nox.project.python_versions(PYPROJECT)
OLDEST, NEWEST = PYTHONS[0], PYTHONS[-1]

#: The optional extras every cell but ``no_hiredis`` installs.
EXTRAS = ("hiredis", "trio", "redis")


def _check_claims() -> None:
    """requires-python, the classifiers and the matrix agree: consecutive minors from the
    lower bound, CPython only."""
    minors = [int(version.split(".")[1]) for version in PYTHONS]
    if PROJECT["requires-python"] != f">={OLDEST}" or minors != list(
        range(minors[0], minors[-1] + 1)
    ):
        raise SystemExit(
            f"pyproject.toml: requires-python {PROJECT['requires-python']!r} and the Python "
            f"classifiers {PYTHONS} must say the same consecutive versions"
        )
    for classifier in (
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: Implementation :: CPython",
    ):
        if classifier not in PROJECT["classifiers"]:
            raise SystemExit(f"pyproject.toml: classifier {classifier!r} is missing")


_check_claims()


def lower_bound_pins() -> list[str]:
    """``NAME==LOWER`` for every requirement of the tested extras (``redis>=5.0`` -> 5.0)."""
    pins = []
    for extra in EXTRAS:
        for text in PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(text)
            (lower,) = [s.version for s in requirement.specifier if s.operator == ">="]
            pins.append(f"{requirement.name}=={lower}")
    return pins


# -- interpreters -------------------------------------------------------------------------------


def _probe(candidate: Path, version: str, path: list[Path]) -> Path | None:
    """The executable behind `candidate` (its ``sys.executable``, links resolved) if it runs
    with `path` as PATH and is CPython `version`; None otherwise (a pyenv shim for an inactive
    version is on PATH but fails, or runs whatever else PATH has)."""
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        return None
    script = "import sys; print(sys.implementation.name, '%d.%d' % sys.version_info[:2])"
    script += "; print(sys.executable)"
    try:
        result = subprocess.run(
            [str(candidate), "-c", script],
            env={**os.environ, "PATH": os.pathsep.join(map(str, path))},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != 2 or lines[0].split() != ["cpython", version]:
        return None
    return Path(lines[1]).resolve()


#: Where each interpreter found is linked as ``pythonX.Y``, first on PATH (nox looks there).
LINKS = ROOT / ".nox" / ".interpreters"


def find_python(version: str) -> Path | None:
    """CPython `version` (``X.Y``): ``pythonX.Y`` on PATH, else the newest patch release under
    ``$PYENV_ROOT/versions``: the interpreter's own ``sys.executable``."""
    path = [Path(entry) for entry in os.environ.get("PATH", "").split(os.pathsep) if entry]
    path = [entry for entry in path if entry != LINKS]  # never find our own links
    candidates = [entry / f"python{version}" for entry in path]
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    releases = [
        install
        for install in (pyenv_root / "versions").glob(f"{version}.*")
        if re.fullmatch(rf"{re.escape(version)}\.\d+", install.name)
    ]
    releases.sort(key=lambda install: int(install.name.rsplit(".", 1)[1]), reverse=True)
    candidates += [install / "bin" / f"python{version}" for install in releases]
    return next((found for c in candidates if (found := _probe(c, version, path))), None)


def _put_interpreters_on_path() -> None:
    """Link each interpreter found into `LINKS`, put that first on PATH, and say loudly which
    are missing.  (nox runs each parallel session in a new nox process, which comes here too.)"""
    LINKS.mkdir(parents=True, exist_ok=True)
    (ROOT / ".nox" / ".gitignore").write_text("*\n", encoding="utf-8")
    missing = []
    for version in PYTHONS:
        found = find_python(version)
        link = LINKS / f"python{version}"
        if found is None:
            missing.append(version)
            link.unlink(missing_ok=True)
        elif not link.is_symlink() or link.readlink() != found:
            temporary = LINKS / f".python{version}.{os.getpid()}"
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(found)
            os.replace(temporary, link)  # atomic: a concurrent nox process never sees none
    if os.environ.get("PATH", "").split(os.pathsep)[0] != str(LINKS):
        os.environ["PATH"] = f"{LINKS}{os.pathsep}{os.environ.get('PATH', '')}"
    if missing:
        consequence = "FAIL (CI is set)" if "CI" in os.environ else "be SKIPPED"
        banner = "!" * 78
        print(
            f"{banner}\n!! CPython {', '.join(missing)} not found on PATH nor under "
            f"$PYENV_ROOT/versions: their cells will {consequence}\n{banner}",
            file=sys.stderr,
            flush=True,
        )


_put_interpreters_on_path()


# -- the cells -----------------------------------------------------------------------------------


def _ignored(folder: str, names: list[str]) -> set[str]:
    """A `shutil.copytree` ignore: VCS, caches, virtualenvs, build output."""
    return {name for name in names if name in _NOT_COPIED or name.endswith(".egg-info")}


_NOT_COPIED = {".git", ".nox", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache"}
_NOT_COPIED |= {".pytest_cache", ".hypothesis", "build", "dist", "_build"}


#: One snapshot of the tree per nox run, made by the ``dist`` session that every cell requires:
#: the wheel built from it, and a copy of it without the source packages to run the tests from.
#: So every cell tests the same code, however the tree changes meanwhile.
DIST = ROOT / ".nox" / ".dist"


@nox.session(python=False, allow_parallel=True)
def dist(session: nox.Session) -> None:
    """Snapshot the tree and build the project's wheel from it (every cell requires this)."""
    shutil.rmtree(DIST, ignore_errors=True)
    tree = DIST / "tree"
    shutil.copytree(ROOT, tree, ignore=_ignored)
    session.run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(DIST), str(tree)
    )  # fmt: skip
    for made in (*PACKAGES, "build", *(p.name for p in tree.glob("*.egg-info"))):
        shutil.rmtree(tree / made, ignore_errors=True)


def _snapshot(session: nox.Session) -> tuple[Path, Path]:
    """The ``dist`` session's wheel, and this cell's own copy of its tree."""
    wheels = sorted(DIST.glob("*.whl"))
    if len(wheels) != 1:
        session.error(f"expected one wheel in {DIST} (run the dist session first): {wheels}")
    tree = Path(session.create_tmp()) / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(DIST / "tree", tree)
    return wheels[0], tree


def run_cell(
    session: nox.Session,
    *,
    extras: tuple[str, ...] = EXTRAS,
    pins: tuple[str, ...] = (),
    expect: tuple[str, ...] = (),
    env: dict[str, str | None] | None = None,
) -> None:
    """Install the wheel with `extras` (+ the test tools) and `pins`, then run the matrix
    tests from a copy of the tree without the source packages."""
    started = time.monotonic()
    wheel, tree = _snapshot(session)
    session.install(f"{wheel}[{','.join((*extras, 'test'))}]", *pins)
    installed = time.monotonic()
    declared = (f"python=={session.python}", "okq:wheel", *expect)
    with session.chdir(tree):
        session.run(
            "python", "-bb", "-m", "pytest", "-p", "no:cacheprovider", "-q", "--matrix",
            *session.posargs,
            env={"OKQ_TEST_EXPECT": " ".join(declared), "OKQ_TEST_NO_SKIPS": "1", **(env or {})},
        )  # fmt: skip
    finished = time.monotonic()
    session.log(
        f"{session.name}: {finished - started:.0f} s"
        f" (venv + install {installed - started:.0f} s, tests {finished - installed:.0f} s)"
    )


@nox.session(python=[OLDEST], requires=["dist"], allow_parallel=True)
def oldest_deps(session: nox.Session) -> None:
    """The oldest CPython with every extra at the lower bound pyproject.toml gives it."""
    pins = tuple(lower_bound_pins())
    run_cell(session, pins=pins, expect=pins)


@nox.session(python=PYTHONS, requires=["dist"], allow_parallel=True)
def tests(session: nox.Session) -> None:
    """Each CPython, with hiredis, trio and redis-py at their newest releases."""
    run_cell(session, expect=EXTRAS)


@nox.session(python=[NEWEST], requires=["dist"], allow_parallel=True)
def uvloop(session: nox.Session) -> None:
    """Every ``asyncio.run`` of the tests on uvloop's event loop."""
    run_cell(session, expect=(*EXTRAS, "uvloop"), env={"OKQ_TEST_ASYNCIO_LOOP": "uvloop"})


@nox.session(python=[NEWEST], requires=["dist"], allow_parallel=True)
def no_hiredis(session: nox.Session) -> None:
    """Without hiredis: the pure decoder is the default (hiredis-only tests deselected)."""
    run_cell(
        session,
        extras=tuple(extra for extra in EXTRAS if extra != "hiredis"),
        expect=("!hiredis", "trio", "redis"),
        # The codec tests insist on hiredis wherever CI is set (there a missing one must fail,
        # not skip); this cell leaves it out on purpose and declares so instead.
        env={"OKQ_TEST_WITHOUT": "hiredis", "CI": None},
    )
