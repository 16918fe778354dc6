"""An experiment's files as DVC keeps them, read without checking anything out: what `ganlab compare` reads.

`dvc exp run` commits each experiment: its small outputs (`cache: false`: eval.json, train.json, losses.csv) are in
that git commit, its cached outputs (models, pictures) in DVC's cache under the hashes the commit's dvc.lock
records. DVC's own `DVCFileSystem(rev=...)` reads both, but opening one builds the index of the commit's whole
pipeline (dvc.yaml's 17 variants × their stages: about 3 s a commit on our 2-core VM), so a comparison of two
experiments spent 7 of its 10 s there. `ExpFiles` reads the same files the way DVC lays them out: git objects for
the commit's own files; for a cached output, its `.dir` listing and objects in the repository's cache (DVC 3's
layout, `<cache>/<md5[:2]>/<md5[2:]>`, the cache found by DVC itself). A file it cannot find that way (another
cache layout, an object only on a remote) is read through `DVCFileSystem` as before; tests/test_compare.py checks
that both ways give the same bytes. `rev` None: the workspace.
"""

from __future__ import annotations

import json
import subprocess
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import yaml


class ExpFiles:
    def __init__(self, repo: Path):
        self.repo = Path(repo)
        self._locks: dict[str, dict[str, str]] = {}
        self._stages: dict[str, dict[str, Any]] = {}  # rev ('' the workspace) -> dvc.lock's stages
        self._cache: Optional[Path] = None
        self._batch: Optional[subprocess.Popen] = None

    # ------------------------------------------------------------------------------------------------ the API
    def read_bytes(self, rev: Optional[str], path: Path) -> Optional[bytes]:
        """The file as the experiment has it, or None when it has none."""
        if rev is None:
            p = self.repo / path
            return p.read_bytes() if p.is_file() else None
        found = self._git(rev, path)
        if found is None:
            found = self._cached(rev, path)
        if found is None:
            fs = self.dvc_fs(rev)
            found = fs.read_bytes(str(path)) if fs.isfile(str(path)) else None
        return found

    def listdir(self, rev: Optional[str], folder: Path) -> list[str]:
        """The names in a folder of the experiment (empty when it has no such folder)."""
        if rev is None:
            p = self.repo / folder
            return sorted(q.name for q in p.iterdir()) if p.is_dir() else []
        listing = self._dir_listing(rev, folder)  # a cached output's folder (the pictures), else git's
        names = self._git_ls(rev, folder) if listing is None else sorted(
            {PurePosixPath(rel).parts[0] for rel in self._under(listing, folder)})
        if not names and listing is None:
            fs = self.dvc_fs(rev)
            names = sorted(PurePosixPath(p).name for p in fs.ls(str(folder), detail=False)) \
                if fs.isdir(str(folder)) else []
        return names

    def dvc_fs(self, rev: str) -> Any:
        return _dvc_fs(str(self.repo), rev)

    # ------------------------------------------------------------------------------------------- git objects
    def _git(self, rev: str, path: Path) -> Optional[bytes]:
        """A blob of the commit, through one `git cat-file --batch` for all the reads (not a process per file)."""
        if self._batch is None:
            self._batch = subprocess.Popen(["git", "cat-file", "--batch"], cwd=self.repo, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        pipe_in, pipe_out = self._batch.stdin, self._batch.stdout
        pipe_in.write(f"{rev}:{PurePosixPath(path)}\n".encode())
        pipe_in.flush()
        header = pipe_out.readline().split()  # b"<sha> blob <size>", or b"<name> missing"
        if len(header) != 3:
            return None
        body = pipe_out.read(int(header[2]) + 1)[:-1]  # the object, then a newline
        return body if header[1] == b"blob" else None

    def close(self) -> None:
        if self._batch is not None:
            self._batch.stdin.close()
            self._batch.wait()
            self._batch = None

    def _git_ls(self, rev: str, folder: Path) -> list[str]:
        proc = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:{PurePosixPath(folder)}"], cwd=self.repo,
                              capture_output=True, text=True)
        return sorted(proc.stdout.split("\n")[:-1]) if proc.returncode == 0 else []

    # ------------------------------------------------------------------------------------------- DVC's cache
    def dep_md5s(self, rev: Optional[str], dep: str) -> dict[str, str]:
        """{stage: md5} of `dep` for every stage of the experiment's dvc.lock that depends on it (rev None: the
        workspace's dvc.lock)."""
        return {name: d["md5"] for name, st in self._lock(rev).items()
                for d in st.get("deps") or [] if d.get("path") == dep and d.get("md5")}

    def _lock(self, rev: Optional[str]) -> dict[str, Any]:
        """The stages of the experiment's dvc.lock (rev None: the workspace's), parsed once."""
        key = rev or ""
        if key not in self._stages:
            raw = self._git(rev, Path("dvc.lock")) if rev else self.read_bytes(None, Path("dvc.lock"))
            doc = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if raw else None
            self._stages[key] = (doc or {}).get("stages") or {}
        return self._stages[key]

    def _outs(self, rev: str) -> dict[str, str]:
        """{output path: md5 (a `.dir` hash for a folder)} from the commit's dvc.lock."""
        if rev not in self._locks:
            self._locks[rev] = {o["path"]: o["md5"] for st in self._lock(rev).values()
                                for o in st.get("outs") or [] if o.get("md5")}
        return self._locks[rev]

    def _object(self, md5: str) -> Optional[Path]:
        if self._cache is None:
            from dvc.repo import Repo

            with Repo(str(self.repo)) as r:  # the cache as DVC resolves it (cache.dir may be set)
                self._cache = Path(r.cache.local.path)
        p = self._cache / md5[:2] / md5[2:]
        return p if p.is_file() else None

    def _dir_listing(self, rev: str, folder: Path) -> Optional[dict[str, str]]:
        """{path relative to the output: md5} of the cached folder output that holds `folder`, keyed from that
        output's root; None when no cached output holds it or its listing is not in the cache."""
        want = PurePosixPath(folder)
        for out, md5 in self._outs(rev).items():
            root = PurePosixPath(out)
            if md5.endswith(".dir") and (want == root or root in want.parents):
                obj = self._object(md5)
                if obj is None:
                    return None
                return {str(root / e["relpath"]): e["md5"] for e in json.loads(obj.read_text())}
        return None

    @staticmethod
    def _under(listing: dict[str, str], folder: Path) -> list[str]:
        prefix = PurePosixPath(folder)
        return [str(PurePosixPath(p).relative_to(prefix)) for p in listing if prefix in PurePosixPath(p).parents]

    def _cached(self, rev: str, path: Path) -> Optional[bytes]:
        key = str(PurePosixPath(path))
        md5 = self._outs(rev).get(key)
        if md5 is None:  # a file inside a cached folder
            listing = self._dir_listing(rev, PurePosixPath(path).parent)
            md5 = None if listing is None else listing.get(key)
        if md5 is None or md5.endswith(".dir"):
            return None
        obj = self._object(md5)
        return obj.read_bytes() if obj is not None else None


@lru_cache(maxsize=64)
def _dvc_fs(repo: str, rev: str) -> Any:
    from dvc.api import DVCFileSystem

    return DVCFileSystem(repo, rev=rev)
