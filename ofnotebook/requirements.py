"""``--requirements`` read with ``packaging`` (PEP 508), checked against the kernel and the index.

Three checks, each where its answer is known and before anything is built:

* **the form** (every target, at capture): ``numpy=>1``, ``pandas==`` or ``foo bar`` would
  otherwise reach pip inside an image build and fail there, minutes later, as a build log;
* **the kernel** (the local target, at capture): the local target runs the function on the
  kernel's own packages, so a requirement that is not installed, or pins a version other than
  the installed one, is said plainly with the ``%pip install`` that makes it true;
* **the index** (image targets, before a build): a pinned version the package index does not
  have (``numpy==0.0.1``, a typo ``nunpy``) is refused before the first layer. The index is
  asked the way pip asks it (``pip index versions`` of the kernel's pip, so its index URL,
  extra indexes, find-links, proxy and certificates apply; no host name is written here) for
  the image's platform and Python, not the kernel's (a Mac builds Linux images), and each
  answer is kept for the kernel's life. An index that does not answer is a warning, once, and
  is not asked again for a few minutes: the build may still work from a cache or a mirror the
  engine sees. A kernel without pip (a uv venv) skips the check, and says so once.

URLs, local paths and pip option lines (``--extra-index-url ...``) pass through unchecked, as
before: they name no distribution to look up.
"""

from __future__ import annotations

import collections
import dis
import importlib.metadata
import importlib.util
import os
import platform as _platform
import re
import subprocess
import sys
import time
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AbstractSet, Iterable, Iterator, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import BuildError, CaptureError

_FORM = ("one distribution per item, in PEP 508 form: NAME, NAME==1.2, 'NAME>=1.2,<2', "
         "'NAME[extra]', 'NAME; python_version>=\"3.10\"' or 'NAME @ https://...'")
#: an operator the user meant, written the other way round or short
_TYPOS = (("=>", ">="), ("=<", "<="), ("=!", "!="), ("=~", "~="))
_ONE_EQUALS = re.compile(r"\s*=\s*")


def passthrough(text: str) -> bool:
    """A line pip takes that names no distribution to check: an option, a URL, a path."""
    return (text.startswith("-") or "://" in text.split("@", 1)[0] or text.startswith(
        ("git+", "hg+", "svn+", "bzr+", ".", "/", "~")) or text.endswith(
        (".whl", ".tar.gz", ".zip")) and " @ " not in text)


def _suggestion(text: str) -> str:
    """The form the user most likely meant, for the message."""
    for wrong, right in _TYPOS:
        if wrong in text:
            return f"write {text.replace(wrong, right)!r}"
    name = re.match(r"[A-Za-z0-9._-]+", text)
    head = name.group(0) if name else ""
    if re.fullmatch(r"[A-Za-z0-9._-]+\s*(==|>=|<=|~=|!=|<|>|===)\s*", text):
        return (f"give a version ({head}==X.Y), or the bare name {head!r} to pin the "
                f"kernel's version")
    if re.fullmatch(r"[A-Za-z0-9._-]+\s*=\s*[^=].*", text):
        return f"write {_ONE_EQUALS.sub('==', text, count=1)!r}"
    if len(text.split()) > 1 and all(re.fullmatch(r"[A-Za-z0-9._-]+", w) for w in text.split()):
        return f"give each as its own item: {', '.join(repr(w) for w in text.split())}"
    return ""


def parse(requirements: Iterable[str]) -> list[tuple[str, Requirement | None]]:
    """Each non-empty requirement with its parsed form (``None`` for a passthrough line);
    every malformed one named in one :class:`CaptureError` with the form that works."""
    parsed: list[tuple[str, Requirement | None]] = []
    bad: list[str] = []
    for raw in requirements:
        text = str(raw).strip()
        if not text:
            continue
        if passthrough(text):
            parsed.append((text, None))
            continue
        try:
            parsed.append((text, Requirement(text)))
        except InvalidRequirement as exc:
            fix = _suggestion(text)  # pip's parser's words only when no fix is known
            bad.append(f"{text!r}: {fix}" if fix
                       else f"{text!r} ({str(exc).splitlines()[0].rstrip('.')})")
    if bad:
        raise CaptureError(
            f"Bad --requirements {'; '.join(bad)}. Requirements are {_FORM}.")
    return parsed


def applies(requirement: Requirement) -> bool:
    """False when the requirement's marker excludes this Python (the image has the same
    major.minor), so nothing about it is checked."""
    return requirement.marker is None or requirement.marker.evaluate()


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def satisfied(requirement: Requirement, version: str) -> bool:
    try:
        return requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def contradiction(text: str, requirement: Requirement, version: str, local: bool) -> str:
    """The warning for a requirement the kernel's installed ``version`` does not satisfy."""
    name = requirement.name
    if local:
        return (f"--requirements {text!r}: this kernel has {name} {version}, and the local "
                f"target runs the function on the kernel's packages, so it runs with {version}. "
                f"To run with {text!r}: %pip install '{text}' and restart the kernel, or "
                f"deploy to an image target (container, kubernetes)")
    return (f"--requirements {text!r} replaces the kernel's {name} {version} in the image: "
            f"the function was tried here with {version}")


def check_local(parsed: Sequence[tuple[str, Requirement | None]]) -> list[str]:
    """On the local target: a requirement not installed in the kernel is a
    :class:`CaptureError` (the function would run without it); one the installed version
    contradicts is a warning (returned)."""
    notes: list[str] = []
    missing: list[str] = []
    for text, requirement in parsed:
        if requirement is None or not applies(requirement):
            continue
        version = installed_version(requirement.name)
        if version is None:
            missing.append(text)
        elif requirement.specifier and not satisfied(requirement, version):
            notes.append(contradiction(text, requirement, version, local=True))
    if missing:
        quoted = " ".join(f"'{m}'" for m in missing)
        raise CaptureError(
            f"--requirements {', '.join(repr(m) for m in missing)}: not installed in this "
            f"kernel, and the local target runs functions on the kernel's own packages (it "
            f"installs nothing). Install first: %pip install {quoted} (then run the cell "
            f"again), or deploy to an image target (--target container) that installs them.")
    return notes


def body_import_note(module: str, owner: str, local: bool) -> str:
    """The warning for a module imported in a function's body that the kernel cannot find."""
    where = ("the local target runs on the kernel's packages: %pip install the distribution "
             "that provides it" if local else "the image will not have it: add "
             "--requirements DIST (the distribution that provides it)")
    return (f"{owner}() imports {module!r} inside its body, and no installed distribution "
            f"provides it; {where}, or guard the import if it is optional")


def local_body_import_note(module: str, owner: str) -> str:
    return (f"{owner}() imports the local module {module!r} inside its body: a module "
            f"imported there is looked up where the function runs, and local modules travel "
            f"only by value. Import it at cell level, outside the function, and use it from "
            f"there")


# --------------------------------------------------------------------------------------------
# Installed distributions


_DIST_CACHE: dict[str, list[str]] | None = None


def packages_distributions() -> dict[str, list[str]]:
    """Top-level import name -> the distributions that install it (cached: one scan)."""
    global _DIST_CACHE
    if _DIST_CACHE is None:
        _DIST_CACHE = (dict(importlib.metadata.packages_distributions())
                       if sys.version_info >= (3, 11) else inferred_packages_distributions())
    return _DIST_CACHE


def inferred_packages_distributions() -> dict[str, list[str]]:
    """``packages_distributions`` as Python 3.11 computes it, for 3.10.

    3.10's reads only ``top_level.txt``, which wheels built by flit, hatch or maturin
    (cloudpickle's among them) lack: their packages would count as local and be pickled by
    value. 3.11 falls back to the names of the ``.py`` files a distribution installed.
    """
    found: dict[str, list[str]] = collections.defaultdict(list)
    for dist in importlib.metadata.distributions():
        names = (dist.read_text("top_level.txt") or "").split() or {
            f.parts[0] if len(f.parts) > 1 else f.with_suffix("").name
            for f in dist.files or () if f.suffix == ".py"}
        for name in names:
            found[name].append(dist.metadata["Name"])
    return dict(found)


# --------------------------------------------------------------------------------------------
# The package index


@dataclass(frozen=True)
class IndexTarget:
    """The image the index is asked for: pip filters wheels by platform and Python, and the
    kernel's (a Mac building a Linux image) would refuse a Linux-only wheel (triton, nvidia-*)."""

    platform: str
    python: str  # major.minor

    @property
    def tags(self) -> tuple[str, ...]:
        return platform_tags(self.platform)

    def pip_options(self) -> list[str]:
        """``--platform`` (each tag) and the CPython the image runs; no ``--only-binary``, so
        a distribution with only a source distribution still counts as there."""
        if not self.tags:
            return []  # an os pip has no tags for here: its own (the kernel's) filter
        options = [arg for tag in self.tags for arg in ("--platform", tag)]
        return options + ["--python-version", self.python, "--implementation", "cp",
                          "--abi", "cp" + self.python.replace(".", "")]

    def __str__(self) -> str:
        return f"{self.platform} and CPython {self.python}"


#: Docker's architecture names -> the machine in pip's platform tags
_MACHINES = {"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "arm": "armv7l"}
#: the newest glibc asked for: every manylinux_2_N down to 2_17 is listed, since pip takes
#: --platform literally (only the legacy manylinux2014/2010 aliases are expanded)
_NEWEST_GLIBC = 39


def platform_tags(image_platform: str) -> tuple[str, ...]:
    """pip's ``--platform`` tags a Linux image of ``os/arch[/variant]`` installs (glibc
    manylinux, musllinux, plain linux); empty for another os."""
    os_, _, rest = image_platform.partition("/")
    arch = rest.split("/", 1)[0]
    if os_ != "linux" or not arch:
        return ()
    machine = _MACHINES.get(arch, arch)
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(_NEWEST_GLIBC, 16, -1)]
    tags += [f"manylinux2014_{machine}", f"manylinux_2_12_{machine}",
             f"manylinux2010_{machine}", f"manylinux_2_5_{machine}", f"manylinux1_{machine}"]
    return tuple(tags + [f"musllinux_1_{minor}_{machine}" for minor in (2, 1)]
                 + [f"linux_{machine}"])


def kernel_platform() -> str:
    """``linux/<this machine>`` in Docker's names: what a local engine builds by default."""
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "i386": "386",
            "armv7l": "arm"}.get(machine, machine)
    return f"linux/{arch}"


def index_target(platform: str | None = None, python: str | None = None) -> IndexTarget:
    """The target of an image build: its platform (default: this machine's, for Linux) and
    its Python's major.minor (default: the kernel's, which the base image must match)."""
    version = python or ".".join(map(str, sys.version_info[:2]))
    return IndexTarget(platform or kernel_platform(), ".".join(version.split(".")[:2]))


@dataclass(frozen=True)
class IndexAnswer:
    """What the index says of one distribution: its versions, or that it was unreachable."""

    versions: tuple[str, ...]
    reachable: bool
    detail: str = ""


#: (dist, specifier, target) -> "" when the index has a match, else the refusal: for the
#: kernel's life
_ANSWERS: dict[tuple[str, str, IndexTarget], str] = {}
#: pip's settings (its PIP_* variables) -> (until when, on time.monotonic) the index is known
#: not to answer: a blackholed index would otherwise cost every build its timeout again
_UNREACHABLE: dict[tuple[tuple[str, str], ...], float] = {}
UNREACHABLE_KEEP_S = 300.0
_TIMEOUT_S = 15
_warned_no_pip: list[bool] = []


def ask_index(name: str, target: IndexTarget | None = None) -> IndexAnswer:
    """The versions the kernel's pip finds for ``name`` for ``target`` (pre-releases
    included)."""
    command = [sys.executable, "-m", "pip", "index", "versions", name, "--pre", "-vvv",
               "--retries", "0", "--timeout", str(_TIMEOUT_S), "--disable-pip-version-check",
               *(target or index_target()).pip_options()]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S * 4,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return IndexAnswer((), False, f"pip did not answer ({exc})")
    found = re.search(r"^Available versions: (.*)$", done.stdout, re.M)
    if found:
        return IndexAnswer(tuple(v.strip() for v in found.group(1).split(",")), True)
    output = done.stdout + done.stderr
    if "No matching distribution found" not in output:
        last = (output.strip().splitlines() or ["no output"])[-1]
        return IndexAnswer((), False, f"pip index versions failed: {last}")
    failures = [line for line in output.splitlines() if line.startswith("Could not fetch URL")]
    broken = [line for line in failures if " 404 " not in line]
    if broken:
        return IndexAnswer((), False, _short(broken[0]))
    return IndexAnswer((), True)


def _short(line: str) -> str:
    """pip's "Could not fetch URL U: connection error: ...[Errno 111] Connection refused')"
    as "U: Connection refused"."""
    found = re.match(r"Could not fetch URL (\S+?):? (.*?)(?: - skipping)?$", line)
    if not found:
        return line[:200]
    url, why = found.groups()
    errno = re.search(r"\[Errno -?\d+\] ([^'\"\)]+)", why)
    return f"{url}: {errno.group(1) if errno else why[:160]}"


def _key(requirement: Requirement, target: IndexTarget) -> tuple[str, str, IndexTarget]:
    return canonicalize_name(requirement.name), str(requirement.specifier), target


def _pip_settings() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("PIP_")))


def _pip_missing() -> bool:
    """True (and warned once) when the kernel's Python has no pip to ask the index with (a
    venv made by uv): the check is skipped, which is said, rather than "did not answer"."""
    if importlib.util.find_spec("pip") is not None:
        return False
    if not _warned_no_pip:
        _warned_no_pip.append(True)
        warnings.warn(f"The requirements are not checked against the package index before "
                      f"builds: pip is not installed in this kernel's Python "
                      f"({sys.executable}; a venv made by uv has none). Building anyway; "
                      f"to have them checked, install pip there (uv pip install pip).",
                      stacklevel=4)
    return True


def check_index(requirements: Sequence[str], function_name: str,
                target: IndexTarget | None = None) -> None:
    """Refuse, before a build, a requirement no version on the index satisfies for
    ``target`` (the image's platform and Python; :func:`index_target` by default): a
    :class:`BuildError`, nothing is built or pushed. Warn when the index cannot be asked; an
    index that did not answer is not asked again for :data:`UNREACHABLE_KEEP_S` seconds.
    Answers are kept per (distribution, specifier, target) for the kernel's life."""
    target = target or index_target()
    wanted = [(text, req) for text, req in parse(requirements)
              if req is not None and req.url is None and applies(req)]
    names = sorted({canonicalize_name(r.name) for _, r in wanted
                    if _key(r, target) not in _ANSWERS})
    settings = _pip_settings()
    if names and (_UNREACHABLE.get(settings, 0.0) > time.monotonic() or _pip_missing()):
        names = []  # said once already: a build does not wait for it again
    answers: dict[str, IndexAnswer] = {}
    if names:
        with ThreadPoolExecutor(max_workers=min(4, len(names))) as pool:
            answers = dict(zip(names, pool.map(lambda n: ask_index(n, target), names)))
    for text, req in wanted:
        answer = answers.get(canonicalize_name(req.name))
        if _key(req, target) not in _ANSWERS and answer is not None and answer.reachable:
            _ANSWERS[_key(req, target)] = (
                "" if any(satisfied(req, v) for v in answer.versions)
                else _refusal(text, req, answer, target))
    refused = [m for m in dict.fromkeys(_ANSWERS.get(_key(r, target), "") for _, r in wanted)
               if m]
    if refused:
        raise BuildError("; ".join(refused) + ". Nothing was built.",
                         function_name=function_name)
    unreachable = {n: a.detail for n, a in answers.items() if not a.reachable}
    if unreachable:
        _UNREACHABLE[settings] = time.monotonic() + UNREACHABLE_KEEP_S
        warnings.warn(f"The package index did not answer for {', '.join(unreachable)} "
                      f"({next(iter(unreachable.values()))}), so whether it has the "
                      f"requirements is not known; building anyway (pip in the build says "
                      f"what it cannot find). It is not asked again for "
                      f"{UNREACHABLE_KEEP_S / 60:.0f} minutes.",
                      stacklevel=3)


def _refusal(text: str, requirement: Requirement, answer: IndexAnswer,
             target: IndexTarget) -> str:
    if not answer.versions:
        return (f"The package index has no distribution {requirement.name!r} for {target} "
                f"(--requirements or lock line {text!r}): check its spelling (the name pip "
                f"installs, as in 'pip install {requirement.name}'), or whether it has wheels "
                f"for that platform (--platform)")
    shown = ", ".join(answer.versions[:8]) + (", ..." if len(answer.versions) > 8 else "")
    return (f"The package index has no version of {requirement.name} that matches {text!r} "
            f"for {target} (it has {shown}): pick one of those, or give the bare name "
            f"{requirement.name!r} to pin the kernel's version")


def forget_index_answers() -> None:
    """Drop the kept answers and unreachable marks (a test, or after changing pip's index
    settings in a config file)."""
    _ANSWERS.clear()
    _UNREACHABLE.clear()
    _warned_no_pip.clear()


# --------------------------------------------------------------------------------------------
# Imports inside a function's body


def body_imports(code: types.CodeType) -> Iterator[str]:
    """The absolute module names ``code`` imports when it runs (``import x``, ``from x.y
    import z``), in it and in the functions, lambdas and comprehensions it defines: the
    ``IMPORT_NAME`` instructions, whose level (the constant loaded two instructions before)
    is 0. Relative imports (level > 0) name the function's own package, never a distribution."""
    instructions = list(dis.get_instructions(code))
    for index, instruction in enumerate(instructions):
        if instruction.opname != "IMPORT_NAME":
            continue
        level_at = instructions[index - 2] if index >= 2 else None
        level = level_at.argval if level_at is not None and level_at.opname in (
            "LOAD_CONST", "LOAD_SMALL_INT") else 0
        if level == 0 and isinstance(instruction.argval, str):
            yield instruction.argval
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from body_imports(const)


def imports_to_lock(functions: Iterable[types.FunctionType], covered: AbstractSet[str], local: bool,
                    stdlib: frozenset[str]) -> tuple[list[tuple[str, str]], set[str], list[str]]:
    """Modules the by-value ``functions`` import in their bodies: ``(module, owner)`` each,
    the installed ones to lock (packages_distributions names their distributions), and a
    warning for each the kernel has no distribution for (unless a requirement in ``covered``,
    canonical distribution names, provides it: :func:`covers`) or that is a local module."""
    found: list[tuple[str, str]] = []
    to_lock: set[str] = set()
    notes: list[str] = []
    mapping = packages_distributions()
    for func in dict.fromkeys(functions):
        for module in dict.fromkeys(body_imports(func.__code__)):
            top = module.split(".", 1)[0]
            if top in stdlib or top == "ofnotebook" or (module, func.__qualname__) in found:
                continue
            found.append((module, func.__qualname__))
            if top in mapping:
                to_lock.add(module)
            elif covers(top, covered):
                continue
            elif _findable(top):
                notes.append(local_body_import_note(top, func.__qualname__))
            else:
                notes.append(body_import_note(top, func.__qualname__, local))
    return found, to_lock, notes


#: import names whose distribution is named otherwise (``import yaml`` is PyYAML), for a
#: requirement that is not installed here, so packages_distributions cannot say
KNOWN_DISTRIBUTIONS = {
    "yaml": ("pyyaml",), "sklearn": ("scikit-learn",), "PIL": ("pillow",),
    "bs4": ("beautifulsoup4",), "dateutil": ("python-dateutil",),
    "cv2": ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
            "opencv-contrib-python-headless"),
}


def covers(top: str, covered: AbstractSet[str]) -> bool:
    """True when a requirement in ``covered`` (canonical distribution names) provides the
    module ``top`` that no installed distribution does: the same name once normalised
    (``import foo_bar`` is ``foo-bar``), or a well-known other name."""
    return not ({canonicalize_name(top), *KNOWN_DISTRIBUTIONS.get(top, ())}.isdisjoint(covered))


def _findable(top: str) -> bool:
    try:
        return top in sys.modules or importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False
