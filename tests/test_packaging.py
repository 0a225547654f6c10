"""What a user of the published okq gets: its license, metadata, version, extras and files.

The sdist and the wheel are built once per run (``python -m build``: the sdist from a copy of
the tree, the wheel from that sdist, as a release does) and their file lists and metadata are
checked: the MIT license in both, the classifiers, one version everywhere, no ``dev`` extra, an
sdist without the test suite.  The hints for a missing optional dependency are checked in
subprocesses that block the dependency.
"""

from __future__ import annotations

import ast
import email.message
import email.parser
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

import okq_proto
import okq_transports

#: tomllib is Python 3.11+; these tests run in the development environment, not the matrix
tomllib = pytest.importorskip("tomllib")

ROOT: Final = Path(__file__).resolve().parent.parent
PYPROJECT: Final[dict[str, Any]] = tomllib.loads(
    (ROOT / "pyproject.toml").read_text(encoding="utf-8")
)
COPYRIGHT: Final = "Copyright (c) 2026 The okq for Python authors"

#: What a copy of the tree leaves out: what a checkout has but git does not.
_NOT_COPIED: Final = (".git", ".nox", ".venv", "*.egg-info", ".*_cache", "__pycache__")
_NOT_COPIED_TOO: Final = (".hypothesis", "_build", "build", "dist")

#: The files the sdist must carry besides the packages' modules.
SDIST_MUST_HAVE: Final = (
    "LICENSE",
    "README.md",
    "pyproject.toml",
    "PKG-INFO",
    "okq_proto/py.typed",
    "okq_transports/py.typed",
    "conformance/py.typed",
)


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path

    def sdist_files(self) -> list[str]:
        """The sdist's file names, without the ``okq-X.Y.Z/`` every one starts with."""
        with tarfile.open(self.sdist) as tar:
            names = [member.name for member in tar.getmembers() if member.isfile()]
        top = {name.split("/", 1)[0] for name in names}
        assert len(top) == 1, f"the sdist has more than one top directory: {sorted(top)}"
        return sorted(name.split("/", 1)[1] for name in names)

    def wheel_files(self) -> list[str]:
        with zipfile.ZipFile(self.wheel) as whl:
            return sorted(whl.namelist())

    def wheel_metadata(self) -> email.message.Message:
        with zipfile.ZipFile(self.wheel) as whl:
            (name,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
            return email.parser.Parser().parsestr(whl.read(name).decode("utf-8"))


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """The sdist and the wheel of the tree as it is now (built from a copy of it, so the
    checkout gets no build products)."""
    work = tmp_path_factory.mktemp("dists")
    tree, out = work / "tree", work / "dist"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*_NOT_COPIED, *_NOT_COPIED_TOO))
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"python -m build failed:\n{result.stdout}\n{result.stderr}"
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dists(sdist, wheel)


# -- 1. the license ------------------------------------------------------------------------------


def test_license_file_is_mit() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert COPYRIGHT in text
    assert "Permission is hereby granted, free of charge" in text
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_license_ships_in_sdist_and_wheel(dists: Dists) -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "LICENSE" in dists.sdist_files()
    licenses = [n for n in dists.wheel_files() if re.fullmatch(r"[^/]+\.dist-info/licenses/.+", n)]
    assert [n.rsplit("/", 1)[1] for n in licenses] == ["LICENSE"]
    with zipfile.ZipFile(dists.wheel) as whl:
        assert whl.read(licenses[0]).decode("utf-8") == license_text
    metadata = dists.wheel_metadata()
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]


# -- 2. the classifiers --------------------------------------------------------------------------

REQUIRED_CLASSIFIERS: Final = (
    "Development Status :: 4 - Beta",
    "Operating System :: OS Independent",
    "Programming Language :: Python :: 3 :: Only",
    "Programming Language :: Python :: 3.10",
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
    "Programming Language :: Python :: 3.13",
    "Typing :: Typed",
    "Framework :: AsyncIO",
    "Framework :: Trio",
    "Framework :: Pytest",
)


def test_classifiers(dists: Dists) -> None:
    published = dists.wheel_metadata().get_all("Classifier") or []
    missing = [c for c in REQUIRED_CLASSIFIERS if c not in published]
    assert not missing, f"add to [project] classifiers in pyproject.toml: {missing}"
    assert len(set(published)) == len(published), "a classifier is listed twice"
    # PEP 639: with a license expression, a license classifier is an error (and redundant)
    assert not [c for c in published if c.startswith("License ::")]
    # requires-python agrees with the oldest Python classifier
    assert dists.wheel_metadata()["Requires-Python"] == ">=3.10"


# -- 3. one version ------------------------------------------------------------------------------


def test_version_is_the_distributions() -> None:
    version = importlib.metadata.version("okq")
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    assert okq_proto.__version__ == version
    assert okq_transports.__version__ == version
    assert "__version__" in okq_proto.__all__
    assert "__version__" in okq_transports.__all__


def test_version_has_one_source() -> None:
    """The version is written once, in okq_proto/_version.py (a pure module: no imports),
    and pyproject.toml reads it from there."""
    project = PYPROJECT["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert list(dynamic) == ["attr"]
    module, _, name = dynamic["attr"].rpartition(".")
    assert name == "__version__"
    source = f"{module.replace('.', '/')}.py"
    tree = ast.parse((ROOT / source).read_text(encoding="utf-8"))
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    version = okq_proto.__version__
    holders = [
        path.relative_to(ROOT).as_posix()
        for top in ("okq_proto", "okq_transports")
        for path in sorted((ROOT / top).rglob("*.py"))
        if f'"{version}"' in path.read_text(encoding="utf-8")
    ]
    assert holders == [source]
    assert source.startswith("okq_proto/")  # the core: okq_transports reads it from there


def test_built_dists_carry_the_version(dists: Dists) -> None:
    version = okq_proto.__version__
    assert dists.wheel_metadata()["Version"] == version
    assert dists.wheel.name.startswith(f"okq-{version}-")
    assert dists.sdist.name == f"okq-{version}.tar.gz"


def _okq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "okq_transports", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_version() -> None:
    result = _okq("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"okq {importlib.metadata.version('okq')}\n",
        "",
    )


def test_cli_version_in_help() -> None:
    result = _okq("--help")
    assert result.returncode == 0
    assert "--version" in result.stdout


# -- 4. the dev tools are not an extra -----------------------------------------------------------


def test_dev_tools_are_a_dependency_group(dists: Dists) -> None:
    extras = dists.wheel_metadata().get_all("Provides-Extra") or []
    assert "dev" not in extras
    assert {"hiredis", "trio", "redis"} <= set(extras)
    assert "dev" not in PYPROJECT["project"]["optional-dependencies"]
    group = PYPROJECT["dependency-groups"]["dev"]
    names = {re.split(r"[\[<>=!~;\s]", text, maxsplit=1)[0] for text in group}
    assert {"nox", "build", "mypy", "ruff", "sphinx"} <= names
    # a dependency group cannot install the project itself: pip would fetch okq from an index
    assert "okq" not in names


def test_no_caller_installs_the_dev_extra() -> None:
    callers = [ROOT / "README.md", ROOT / "noxfile.py", ROOT / "pyproject.toml"]
    for top in ("scripts", ".ci", "docs"):
        callers += [p for p in sorted((ROOT / top).rglob("*")) if p.is_file()]
    dev_extra = re.compile(r"(?:okq|\.)\[(?:[\w-]+,)*dev(?:,[\w-]+)*\]")
    stale = [
        p.relative_to(ROOT).as_posix()
        for p in callers
        if "_build" not in p.parts
        and dev_extra.search(p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not stale, f"these still install the dev extra (now [dependency-groups] dev): {stale}"
    script = (ROOT / "scripts" / "test").read_text(encoding="utf-8")
    assert "--group dev" in script
    assert "-e '.[hiredis,trio,redis,test]'" in script


# -- 5. the sdist's files ------------------------------------------------------------------------


def test_sdist_files(dists: Dists) -> None:
    files = dists.sdist_files()
    missing = [name for name in SDIST_MUST_HAVE if name not in files]
    assert not missing, f"the sdist lacks {missing}"
    # the test suite runs from a checkout (it needs scripts/, docs/ and a server): none of it
    # ships, rather than a few stray files that fail on their own
    assert not [name for name in files if name.startswith("tests/")]
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    for package in ("okq_proto", "okq_transports", "conformance"):
        assert f"{package}/__init__.py" in files


def test_wheel_files(dists: Dists) -> None:
    files = dists.wheel_files()
    for marker in ("okq_proto/py.typed", "okq_transports/py.typed", "conformance/py.typed"):
        assert marker in files
    tops = {
        name.split("/", 1)[0] for name in files if not name.split("/", 1)[0].endswith(".dist-info")
    }
    assert tops == {"okq_proto", "okq_transports", "conformance"}


# -- 6. a missing optional dependency says how to install it -------------------------------------

_BLOCKED_IMPORT: Final = """\
import sys
sys.modules[{blocked!r}] = None
try:
    import {module}
except ImportError as exc:
    print(type(exc).__name__, exc.name)
    print(exc)
else:
    raise SystemExit("imported without its dependency")
"""


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("okq_transports.trio", "trio", "trio"),
        ("okq_transports.anyio", "anyio", "anyio"),
        ("okq_transports.otel", "opentelemetry", "otel"),
        ("okq_transports.redis", "redis", "redis"),
        ("okq_proto.hiredis", "hiredis", "hiredis"),
    ],
)
def test_missing_extra_says_how_to_install_it(module: str, blocked: str, extra: str) -> None:
    code = _BLOCKED_IMPORT.format(blocked=blocked, module=module)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kind, message = result.stdout.split("\n", 1)
    assert kind == f"ModuleNotFoundError {blocked}"
    assert f"pip install 'okq[{extra}]'" in message
    assert module in message


def test_core_falls_back_without_hiredis() -> None:
    """The hint is raised by okq_proto._hiredis; make_decoder still picks the pure decoder."""
    code = (
        "import sys\nsys.modules['hiredis'] = None\n"
        "import okq_proto\nprint(type(okq_proto.make_decoder()).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout) == (0, "Decoder\n"), result.stderr


# -- 7. the README says how to install -----------------------------------------------------------


def test_readme_install_section() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    install = text.index("## Install")
    assert install < text.index("## Try it")
    section = text[install : text.index("\n## ", install + 1)]
    assert "pip install okq\n" in section
    for extra in ("hiredis", "trio", "redis"):
        assert f"okq[{extra}]" in section
        assert extra in PYPROJECT["project"]["optional-dependencies"]
