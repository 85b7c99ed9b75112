"""transformers' own common model tests, taken from the source distribution of the installed transformers version.

The sdist on PyPI ships `tests/test_modeling_common.py` (`ModelTesterMixin`) and `tests/test_configuration_common.py`
(`ConfigTester`). `load_common_tests()` downloads it once with pip into a cache outside the repository
(`$RT_TRANSFORMERS_SDIST_CACHE`, default `~/.cache/recurrent_transformer/transformers-sdist/<version>/`), extracts
those two files into a package named `transformers_sdist_tests` (the sdist's own package name, `tests`, would clash
with this repository's `tests/`) and imports them from there; their relative imports resolve inside that package.

The sdist leaves out three modules those files import; the package gets a stand-in for each:
- `exporters/test_export.py`: an empty `ExportTesterMixin`, so the `torch.export` tests are absent;
- `generation/test_utils.py`: an empty `GenerationTesterMixin` (generation is tested in `test_generation.py`);
- `utils/test_configuration_utils.py`: `config_common_kwargs`, copied from transformers' repository (5.x).
"""

import importlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

import transformers

CACHE_ENV = "RT_TRANSFORMERS_SDIST_CACHE"
PACKAGE = "transformers_sdist_tests"
SDIST_FILES = ("test_modeling_common.py", "test_configuration_common.py")
PIP_TIMEOUT_S = 300

STAND_INS = {
    "__init__.py": '"""transformers\' `tests/` from its source distribution (see tests/transformers_sdist.py)."""\n',
    "exporters/__init__.py": "",
    "exporters/test_export.py": (
        '"""Stand-in: the sdist carries no tests/exporters, so no torch.export tests run."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
    "generation/__init__.py": "",
    "generation/test_utils.py": (
        '"""Stand-in: the sdist carries no tests/generation; generation has its own tests in this repository."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": (
        '"""Stand-in: `config_common_kwargs` as in transformers\' tests/utils/test_configuration_utils.py (5.x)."""\n\n'
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "output_attentions": True,\n'
        '    "dtype": "float16",\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["BertModel"],\n'
        '    "id2label": {0: "label"},\n'
        '    "label2id": {"label": "0"},\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
}


class SdistUnavailable(RuntimeError):
    """The source distribution could not be downloaded or read (the message says why)."""


def cache_dir(version: str = transformers.__version__) -> Path:
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "recurrent_transformer" / "transformers-sdist"
    return base / version


def download_sdist(version: str, directory: Path) -> Path:
    """`pip download --no-deps --no-binary :all: transformers==<version>` into `directory`; the tarball's path."""
    existing = sorted(directory.glob(f"transformers-{version}.tar.gz"))
    if existing:
        return existing[0]
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
    ]
    command += ["--quiet", f"transformers=={version}", "-d", str(directory)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SdistUnavailable(f"`{' '.join(command)}` did not finish: {error}") from error
    tarballs = sorted(directory.glob(f"transformers-{version}.tar.gz"))
    if result.returncode or not tarballs:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise SdistUnavailable(f"`{' '.join(command)}` failed (exit {result.returncode}): {' | '.join(tail)}")
    return tarballs[0]


def extract_tests(tarball: Path, package_dir: Path) -> None:
    """Write SDIST_FILES and STAND_INS into `package_dir`, atomically (a half-written cache is never used)."""
    package_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=package_dir.parent) as scratch:
        staging = Path(scratch) / PACKAGE
        staging.mkdir()
        with tarfile.open(tarball) as archive:
            members = {Path(member.name).parts[1:]: member for member in archive.getmembers() if member.isfile()}
            for name in SDIST_FILES:
                member = members.get(("tests", name))
                if member is None:
                    raise SdistUnavailable(f"{tarball.name} holds no tests/{name}")
                (staging / name).write_bytes(archive.extractfile(member).read())
        for name, text in STAND_INS.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text)
        try:
            staging.rename(package_dir)
        except OSError:
            if not (package_dir / SDIST_FILES[0]).exists():  # another process won the race: use its copy
                raise


def load_common_tests() -> tuple[ModuleType, ModuleType]:
    """`(test_modeling_common, test_configuration_common)` of the installed transformers version.

    Raises `SdistUnavailable` when the sdist can neither be found in the cache nor downloaded.
    """
    version = transformers.__version__
    directory = cache_dir(version)
    package_dir = directory / PACKAGE
    if not all((package_dir / name).exists() for name in SDIST_FILES):
        extract_tests(download_sdist(version, directory), package_dir)
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
    configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    return modeling, configuration
