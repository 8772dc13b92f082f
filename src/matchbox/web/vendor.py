"""Vendor TradingView's lightweight-charts into the dashboard's static files, from the npm registry.

The dashboard must work with no internet, so the API serves the charting library itself. It is
fetched at build time (``make`` runs ``python -m matchbox.web.vendor``), never committed: the
pinned version's tarball comes from the npm registry over HTTPS, its sha512 is checked against
the integrity pinned here (and against the registry's own record of it), and only the standalone
production build and the licence are extracted into ``static/vendor/``. A ``vendor.json`` written
last records what is there, so a second run with the files intact does nothing and needs no
network. Only the Python standard library is used: no node, no npm.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE = "lightweight-charts"
VERSION = "5.2.1"
# the registry's dist.integrity for that version: a tarball that hashes otherwise is refused
INTEGRITY = "sha512-IVwoK1RLFiLPubaKIjNbtjWLnpPMqiABSrTay6whmNa8L1+19292VtHJ+BWyPUuLCwF0tcQlhEWd1CLB2a1nsQ=="
REGISTRY = "https://registry.npmjs.org"
# tarball member -> file name in static/vendor
FILES = {
    "package/dist/lightweight-charts.standalone.production.js": "lightweight-charts.standalone.production.js",
    "package/LICENSE": "LICENSE",
}
MANIFEST = "vendor.json"
TARGET = Path(__file__).resolve().parent / "static" / "vendor"
TIMEOUT_S = 60.0
MAX_TARBALL_BYTES = 50 * 1024 * 1024


class VendorError(Exception):
    """The library could not be fetched or did not check out; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Pin:
    package: str = PACKAGE
    version: str = VERSION
    integrity: str = INTEGRITY


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_current(target: Path, pin: Pin) -> bool:
    """True when ``target`` holds the pinned version's files, unchanged since they were written."""
    try:
        manifest = json.loads((target / MANIFEST).read_text())
        if (manifest.get("version"), manifest.get("integrity")) != (pin.version, pin.integrity):
            return False
        files: dict[str, str] = manifest["files"]
        return set(files) == set(FILES.values()) and all(sha256_of(target / n) == h for n, h in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _get(url: str, limit: int) -> bytes:
    if not url.startswith("https://"):
        raise VendorError(f"refusing to fetch {url}: only HTTPS")
    request = urllib.request.Request(url, headers={"Accept": "application/json, application/octet-stream"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        body: bytes = response.read(limit + 1)
    if len(body) > limit:
        raise VendorError(f"{url} is larger than {limit} bytes")
    return body


def tarball_url(registry: str, pin: Pin) -> str:
    """The tarball's address from the registry's metadata, whose integrity must be the pinned one."""
    metadata: dict[str, Any] = json.loads(_get(f"{registry.rstrip('/')}/{pin.package}/{pin.version}", 1 << 22))
    dist = metadata.get("dist") or {}
    if dist.get("integrity") != pin.integrity:
        raise VendorError(
            f"the registry's integrity for {pin.package} {pin.version} is {dist.get('integrity')!r}, "
            f"not the pinned {pin.integrity!r}: refusing it"
        )
    url = dist.get("tarball")
    if not isinstance(url, str):
        raise VendorError(f"the registry's metadata for {pin.package} {pin.version} names no tarball")
    return url


def check_integrity(data: bytes, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise VendorError(f"unsupported integrity {integrity!r} (expected sha512-...)")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise VendorError(f"the tarball's sha512 is {actual}, not the pinned {expected}: refusing it")


def extract(data: bytes, target: Path, pin: Pin) -> None:
    """Write the wanted members (and then the manifest) into ``target``, each atomically."""
    target.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member_name, file_name in FILES.items():
            member = archive.getmember(member_name)
            source = archive.extractfile(member) if member.isfile() else None
            if source is None:
                raise VendorError(f"{member_name} is not a regular file in the tarball")
            content = source.read()
            _write(target / file_name, content)
            hashes[file_name] = hashlib.sha256(content).hexdigest()
    manifest = {"package": pin.package, "version": pin.version, "integrity": pin.integrity, "files": hashes}
    _write(target / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def _write(path: Path, content: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(content)
    partial.replace(path)


def vendor(
    target: Path = TARGET, registry: str = REGISTRY, pin: Pin = Pin(), force: bool = False, tarball: Path | None = None
) -> bool:
    """Fetch (or read ``tarball``) and extract the pinned library unless it is there; True if it did."""
    if not force and is_current(target, pin):
        return False
    if tarball is not None:
        data = tarball.read_bytes()
    else:
        try:
            data = _get(tarball_url(registry, pin), MAX_TARBALL_BYTES)
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            raise VendorError(
                f"could not download {pin.package} {pin.version} from {registry}: {exc}\n"
                "The dashboard's chart needs it, fetched once at build time. Check the network (or set "
                "HTTPS_PROXY) and run `make` again, or `.venv/bin/python -m matchbox.web.vendor`; "
                f"without a network, bring the tarball from elsewhere (`npm pack {pin.package}@{pin.version}`) "
                "and pass it with --tarball FILE."
            ) from None
    check_integrity(data, pin.integrity)
    extract(data, target, pin)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m matchbox.web.vendor", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=REGISTRY, help=f"the npm registry to fetch from (default {REGISTRY})")
    parser.add_argument("--target", type=Path, default=TARGET, help="where to put the files")
    parser.add_argument("--force", action="store_true", help="fetch again even if the files are there")
    parser.add_argument("--tarball", type=Path, help="a local copy of the package's .tgz instead of downloading")
    args = parser.parse_args(argv)
    try:
        fetched = vendor(args.target, args.registry, force=args.force, tarball=args.tarball)
    except VendorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    state = "extracted" if fetched else "already present"
    print(f"{PACKAGE} {VERSION}: {state} in {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
