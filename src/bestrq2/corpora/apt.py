"""Get Debian packages: system tools through scripts/setup_system.sh, data packages by download + unpack.

Data-only packages are fetched with `apt-get download` (no root, no dependencies pulled) and unpacked with
`dpkg-deb -x` into `<cache>/pkgs/<name>/`, which is renamed into place only when complete, so an
interrupted run simply starts that package again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

SETUP_SCRIPT = "scripts/setup_system.sh"


class MissingToolError(RuntimeError):
    """A system tool the builder needs is not installed."""


def find_setup_script() -> Path | None:
    """scripts/setup_system.sh of the checkout this package runs from (None for a plain pip install)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / SETUP_SCRIPT
        if candidate.is_file():
            return candidate
    return None


def ensure_tools(
    tools: list[str],
    small: bool = False,
    python_modules: tuple[str, ...] = ("tinysoundfont",),
    paths: tuple[str, ...] = (),
) -> None:
    """Make sure `tools` (executables), `paths` (installed data, e.g. mbrola voices) and
    `python_modules` exist, running setup_system.sh if not."""

    def missing() -> list[str]:
        out = [t for t in tools if shutil.which(t) is None]
        out += [p for p in paths if not Path(p).exists()]
        for mod in python_modules:
            try:
                __import__(mod)
            except ImportError:
                out.append(f"python module {mod}")
        return out

    if not missing():
        return
    script = find_setup_script()
    can_root = os.geteuid() == 0 or shutil.which("sudo") is not None
    if script is None or not can_root or os.environ.get("BESTRQ2_NO_SETUP"):
        raise MissingToolError(
            f"missing {', '.join(missing())}; run `bash {SETUP_SCRIPT}` (as root) from a bestrq2 checkout first"
        )
    print(
        f"[bestrq2 data] missing {', '.join(missing())}: running {SETUP_SCRIPT}", file=sys.stderr, flush=True
    )
    cmd = ["bash", str(script)] + (["--small"] if small else [])
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHON": sys.executable})
    if missing():
        raise MissingToolError(f"still missing after {SETUP_SCRIPT}: {', '.join(missing())}")


def _download(name: str, debs: Path) -> Path:
    found = sorted(debs.glob(f"{name}_*.deb"))
    if found:
        return found[-1]
    work = debs / f".dl-{name}-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["apt-get", "download", "-q", name], cwd=work, capture_output=True, text=True)
    if res.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(
            f"`apt-get download {name}` failed: {res.stderr.strip()[-400:]}\n"
            f"(run `apt-get update`, or `bash {SETUP_SCRIPT}` which also adds contrib/non-free)"
        )
    (deb,) = work.glob("*.deb")
    final = debs / deb.name
    os.replace(deb, final)
    shutil.rmtree(work, ignore_errors=True)
    return final


def _unpack(name: str, deb: Path, pkgs: Path, members: tuple[str, ...] = ()) -> Path:
    dest = pkgs / name
    if (dest / ".complete").exists():
        return dest
    tmp = pkgs / f".{name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if members:
        # Extract only some folders: dpkg-deb streams the data tarball, tar keeps the wanted paths.
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as p:
            subprocess.run(
                ["tar", "-x", "-C", str(tmp), "--wildcards", *[f"./{m.strip('/')}/*" for m in members]],
                stdin=p.stdout,
                check=True,
            )
    else:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    (tmp / ".complete").write_text(deb.name + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def fetch_packages(names: dict[str, tuple[str, ...]], cache: str | Path) -> dict[str, Path]:
    """Download and unpack data packages -> {name: unpacked root}.

    `names` maps a package to the folders to keep (empty tuple: everything). Cached in `cache`.
    """
    cache = Path(cache).resolve()  # absolute: tools (mma) run in other working directories
    debs, pkgs = cache / "debs", cache / "pkgs"
    debs.mkdir(parents=True, exist_ok=True)
    pkgs.mkdir(parents=True, exist_ok=True)
    todo = [n for n in names if not (pkgs / n / ".complete").exists()]
    if todo and shutil.which("apt-get") is None:
        raise MissingToolError("apt-get not found: the data builders need a Debian-based system")

    def one(name: str) -> Path:
        return _unpack(name, _download(name, debs), pkgs, names[name])

    out = {n: pkgs / n for n in names if n not in todo}
    if todo:
        # Downloads are network-bound and unpacking is one xz stream per package: two at a time fills 2 cores.
        with ThreadPoolExecutor(max_workers=2) as ex:
            # Largest first, so the long unpack starts early.
            todo.sort(key=lambda n: -PACKAGE_SIZE_HINT.get(n, 0))
            for name, root in tqdm(
                zip(todo, ex.map(one, todo)), total=len(todo), desc="packages", unit="pkg", leave=False
            ):
                out[name] = root
    return out


PACKAGE_SIZE_HINT = {
    "tuxpaint-stamps-default": 161,
    "hedgewars-data": 145,
    "fluid-soundfont-gm": 120,
    "opl3-soundfont": 100,
    "ktuberling-data": 47,
    "klettres-data": 40,
    "musescore-general-soundfont-small": 34,
    "qabcs-data": 34,
    "scratch": 26,
    "sonic-pi-samples": 22,
}
"""Approximate .deb sizes in MB (only used to order work)."""
