"""A local, in-memory stand-in for the Hugging Face Hub HTTP API, for tests.

``LocalHub`` runs a thread-based ``http.server`` on 127.0.0.1 (free port) and answers the
requests that ``huggingface_hub`` (and through it ``transformers`` and ``timm``) sends for
model repos.  Point the clients at it with ``HF_ENDPOINT=hub.url`` *before* importing them.

Endpoints (``{type}`` is ``models``, ``datasets`` or ``spaces``; ``{repo}`` is ``namespace/name``;
``{rev}`` is a branch, a 40-hex commit sha or a PR ref ``refs/pr/N``, URL-quoted as one segment):

  POST /api/repos/create                       {"name", "organization"?, "type"?, "private"?} -> {"url"}; 409 if it exists
  POST /api/validate-yaml                      -> {"errors": [], "warnings": []}  (400 if the front matter is not YAML)
  GET  /api/{type}/{repo}[/revision/{rev}]     repo info: {"id", "sha", "private", "siblings", "cardData"?, ...}
  GET  /api/{type}/{repo}/tree/{rev}[/{path}]  file listing: [{"type": "file", "path", "size", "oid"}] (recursive)
  GET  /api/{type}/{repo}/refs                 {"branches", "tags", "converts", "pullRequests"?}
  POST /api/{type}/{repo}/branch/{branch}      create a branch from main (or json "startingPoint")
  POST /api/{type}/{repo}/preupload/{rev}      every file "regular" (sent inline, base64): no LFS/Xet server needed
  POST /api/{type}/{repo}/commit/{rev}         NDJSON (header, file, deletedFile, deletedFolder); ?create_pr=1 opens a PR
  GET  /api/{type}/{repo}/discussions          PRs opened by create_pr commits (discussions == PRs here)
  GET  /api/{type}/{repo}/discussions/{num}    one PR, with its "changes" ({"base", "mergeCommitId"})
  HEAD|GET /[{type}/]{repo}/resolve/{rev}/{path}  file bytes; headers X-Repo-Commit, ETag (git blob sha1), Content-Length
  GET  /api/whoami-v2                          {"name", "orgs": [{"name": "org"}], "auth": {"accessToken": {"role"}}}
                                               (401 without a token; the name and the role are test hooks)

Errors carry ``X-Error-Code`` like the real Hub (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``) so the client raises the matching exception.  Test hooks: ``fail()`` (inject
error answers), ``require_token()`` (401 without the right ``Authorization: Bearer``),
``requests`` (log of every request), ``files()`` / ``commits()`` / ``refs()`` / ``prs()``
(inspect the store) and ``create_repo()`` / ``commit()`` (seed it without a client).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

import yaml

GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
_SHA = re.compile(r"[0-9a-f]{40}")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file, which the Hub uses as ETag and preupload ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]  # full snapshot of the repo at this commit
    parent: str | None
    date: float = field(default_factory=time.time)


@dataclass
class Repo:
    repo_type: str  # "model", "dataset", "space"
    repo_id: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)  # oid -> commit, in creation order
    refs: dict[str, str] = field(default_factory=dict)  # "main", other branches, "refs/pr/N" -> oid
    prs: list[dict] = field(default_factory=list)


@dataclass
class Request:
    method: str
    path: str  # URL-decoded, without the query string
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    status: int = 0


class LocalHub:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self._faults: list[list] = []  # [method, compiled regex, status, times left, message]
        self._token: str | None = None
        self.user, self.token_role = "hub-user", "write"  # what whoami answers; the user is a member of "org"
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # ----- lifecycle -----
    def start(self) -> "LocalHub":
        handler = type("Handler", (_Handler,), {"hub": self})  # each server's handler knows its hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="LocalHub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----- test hooks -----
    def fail(self, method: str, path_regex: str, status: int, times: int = 1, message: str = "injected failure"):
        """The next ``times`` requests whose method matches (``"*"`` = any) and whose URL-decoded path
        matches ``path_regex`` (``re.search``) answer ``status`` with ``{"error": message}``."""
        with self._lock:
            self._faults.append([method.upper(), re.compile(path_regex), status, times, message])

    def require_token(self, token: str | None) -> None:
        """From now on, answer 401 unless ``Authorization: Bearer <token>`` (None turns it off)."""
        self._token = token

    def reset(self) -> None:
        """Forget injected failures, the token requirement and the request log (repos stay)."""
        with self._lock:
            self._faults.clear()
            self._token = None
            self.user, self.token_role = "hub-user", "write"
            self.requests.clear()

    def clear(self) -> None:
        """Drop every repo, and ``reset()``."""
        with self._lock:
            self.repos.clear()
            self.reset()

    # ----- store -----
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def resolve(self, repo: Repo, revision: str) -> Commit:
        revision = unquote(revision).removeprefix("refs/heads/")
        oid = repo.refs.get(revision) or (revision if revision in repo.commits else None)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        with self._lock:
            return dict(self.resolve(self.repo(repo_id, repo_type), revision).files)

    def commits(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[Commit]:
        """History of ``revision``, newest first (follows parents)."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            commit, out = self.resolve(repo, revision), []
            while commit is not None:
                out.append(commit)
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return out

    def refs(self, repo_id: str, repo_type: str = "model") -> dict[str, str]:
        with self._lock:
            return dict(self.repo(repo_id, repo_type).refs)

    def prs(self, repo_id: str, repo_type: str = "model") -> list[dict]:
        with self._lock:
            return [dict(pr) for pr in self.repo(repo_id, repo_type).prs]

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False, files=None) -> Repo:
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, "You already created this repo")
            repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
            self._add_commit(repo, None, "initial commit", {".gitattributes": GITATTRIBUTES}, "main")
            if files:
                self.commit(repo_id, files, repo_type=repo_type)
            return repo

    def commit(self, repo_id, files: dict[str, bytes], message="seed", revision="main", delete=(), repo_type="model"):
        """Commit ``files`` (path -> bytes) and delete ``delete`` paths on a branch; returns the Commit."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            head = self.resolve(repo, revision)
            snapshot = {p: c for p, c in head.files.items() if p not in set(delete)}
            return self._add_commit(repo, head.oid, message, {**snapshot, **files}, revision)

    def _add_commit(self, repo: Repo, parent, message, files, ref) -> Commit:
        seed = f"{parent}\n{message}\n{time.time_ns()}\n{len(repo.commits)}\n" + "".join(
            f"{p}:{git_blob_sha1(c)}\n" for p, c in sorted(files.items())
        )
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), message, files, parent)
        repo.commits[commit.oid] = commit
        repo.refs[ref] = commit.oid
        return commit

    def _repo_url(self, repo: Repo) -> str:
        prefix = "" if repo.repo_type == "model" else f"/{repo.repo_type}s"
        return f"{self.url}{prefix}/{repo.repo_id}"

    # ----- request handling (runs in server threads) -----
    def _check_hooks(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)
            for fault in self._faults:
                method, regex, status, times, message = fault
                if times > 0 and method in ("*", req.method) and regex.search(req.path):
                    fault[3] -= 1
                    raise HubError(status, message)
        if self._token is not None and req.path != "/api/validate-yaml":  # the card validator sends no token
            auth = req.headers.get("authorization")
            if auth is None:
                raise HubError(401, "Invalid username or password.")
            if auth != f"Bearer {self._token}":
                raise HubError(
                    401,
                    "Invalid credentials in Authorization header",
                    headers={"X-Error-Message": "Invalid credentials in Authorization header"},
                )

    def _readable_repo(self, req: Request, kind: str, repo_id: str) -> Repo:
        repo = self.repo(repo_id, kind.rstrip("s") if kind else "model")
        if repo.private and "authorization" not in req.headers:
            raise HubError(401, "Repository not found", "RepoNotFound")
        return repo


_REPO = r"(?:(?P<kind>models|datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"
_API = r"/api/(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: LocalHub

    def log_message(self, format, *args):  # keep test output (and tokens) out of stderr
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        raw_path, _, raw_query = self.path.partition("?")
        query = {k: v[-1] for k, v in parse_qs(raw_query).items()}
        req = Request(method, unquote(raw_path), query, {k.lower(): v for k, v in self.headers.items()})
        body = self._read_body()
        try:
            self.hub._check_hooks(req)
            for route_method, pattern, name in _ROUTES:
                match = re.fullmatch(pattern, raw_path)
                if match and route_method in (method, "GET" if method == "HEAD" else None):
                    args = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                    with self.hub._lock:
                        status, payload, headers = getattr(self, name)(req, body, **args)
                    break
            else:
                raise HubError(404, f"LocalHub: no route for {method} {raw_path}")
        except HubError as err:
            status, payload = err.status, {"error": err.message}
            headers = {**({"X-Error-Code": err.code} if err.code else {}), **err.headers}
        except Exception as exc:  # a bug here, or a request this stand-in does not understand
            status, payload, headers = 500, {"error": f"LocalHub failed on {method} {raw_path}: {exc!r}"}, {}
        req.status = status
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        if not isinstance(payload, bytes):
            self.send_header("Content-Type", "application/json")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    # ----- endpoints: each returns (status, json-able payload or bytes, headers) -----
    def whoami(self, req, body):
        if "authorization" not in req.headers:
            raise HubError(401, "Invalid username or password.")
        token = {"role": self.hub.token_role}
        orgs = [{"name": "org", "roleInOrg": "write"}]
        return 200, {"type": "user", "name": self.hub.user, "orgs": orgs, "auth": {"accessToken": token}}, {}

    def create_repo(self, req, body):
        data = json.loads(body or b"{}")
        name, org = data["name"], data.get("organization")
        repo_id = f"{org}/{name}" if org else name if "/" in name else f"user/{name}"
        repo_type = data.get("type") or "model"
        if (repo_type, repo_id) in self.hub.repos:  # the client reads "url" from the 409 body too (exist_ok)
            existing = self.hub.repos[(repo_type, repo_id)]
            return 409, {"error": "You already created this repo", "url": self.hub._repo_url(existing)}, {}
        private = bool(data.get("private")) or data.get("visibility") == "private"
        repo = self.hub.create_repo(repo_id, repo_type, private)
        return 200, {"url": self.hub._repo_url(repo), "name": repo_id}, {}

    def validate_yaml(self, req, body):
        try:
            _front_matter(json.loads(body).get("content", ""))
        except yaml.YAMLError as exc:
            raise HubError(400, f"Invalid YAML in README.md metadata: {exc}")
        return 200, {"errors": [], "warnings": []}, {}

    def repo_info(self, req, body, kind, repo, rev=None):
        r = self.hub._readable_repo(req, kind, repo)
        commit = self.hub.resolve(r, rev or "main")
        info = {
            "id": r.repo_id,
            "modelId": r.repo_id,
            "author": r.repo_id.split("/")[0],
            "sha": commit.oid,
            "private": r.private,
            "gated": False,
            "disabled": False,
            "tags": [],
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date)),
            "siblings": [{"rfilename": p, "size": len(c)} for p, c in sorted(commit.files.items())],
        }
        try:
            card = _front_matter(commit.files.get("README.md", b"").decode("utf-8", "replace"))
        except yaml.YAMLError:
            card = None
        if isinstance(card, dict):
            info["cardData"] = card
            info["library_name"] = card.get("library_name")
            info["tags"] = card.get("tags") or []
        return 200, info, {}

    def tree(self, req, body, kind, repo, rev, path=None):
        commit = self.hub.resolve(self.hub._readable_repo(req, kind, repo), rev)
        prefix = f"{path.strip('/')}/" if path else ""
        entries = [
            {"type": "file", "path": p, "size": len(c), "oid": git_blob_sha1(c)}
            for p, c in sorted(commit.files.items())
            if p.startswith(prefix)
        ]
        if path and not entries:
            raise HubError(404, f"{path} does not exist", "EntryNotFound")
        return 200, entries, {}

    def list_refs(self, req, body, kind, repo):
        r = self.hub._readable_repo(req, kind, repo)
        ref = lambda name, oid: {
            "name": name,
            "ref": name if name.startswith("refs/") else f"refs/heads/{name}",
            "targetCommit": oid,
        }
        branches = [ref(n, o) for n, o in r.refs.items() if not n.startswith("refs/pr/")]
        prs = [ref(n, o) for n, o in r.refs.items() if n.startswith("refs/pr/")]
        return 200, {"branches": branches, "tags": [], "converts": [], "pullRequests": prs}, {}

    def create_branch(self, req, body, kind, repo, branch):
        r = self.hub.repo(repo, kind.rstrip("s"))
        if branch in r.refs:
            raise HubError(409, f"Branch {branch} already exists")
        start = json.loads(body or b"{}").get("startingPoint") or "main"
        r.refs[branch] = self.hub.resolve(r, start).oid
        return 200, {}, {}

    def preupload(self, req, body, kind, repo, rev):
        r = self.hub.repo(repo, kind.rstrip("s"))
        commit = self.hub.resolve(r, rev)
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_sha1(commit.files[f["path"]]) if f["path"] in commit.files else None,
            }
            for f in json.loads(body)["files"]
        ]
        return 200, {"files": files, "commitOid": commit.oid}, {}

    def commit(self, req, body, kind, repo, rev):
        r = self.hub.repo(repo, kind.rstrip("s"))
        head = self.hub.resolve(r, rev)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((l["value"] for l in lines if l["key"] == "header"), {})
        create_pr = req.query.get("create_pr") in ("1", "true")
        parent = header.get("parentCommit")
        if parent:
            matches = [oid for oid in r.commits if oid.startswith(parent)]
            if len(matches) != 1:
                raise HubError(404, f"Invalid parent commit {parent}", "RevisionNotFound")
            if create_pr:
                head = r.commits[matches[0]]
            elif matches[0] != head.oid:
                raise HubError(412, f"A commit has happened since {parent}. Please refresh and try again.")
        files = dict(head.files)
        for line in lines:  # build the new snapshot fully before storing anything: commits are atomic
            key, value = line["key"], line["value"]
            if key == "file":
                content = value["content"]
                files[value["path"]] = (
                    base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                )
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(folder)}
            elif key != "header":
                raise HubError(400, f"LocalHub does not support {key!r} commit operations (only regular files)")
        message = header.get("summary") or "commit"
        if header.get("description"):
            message += "\n\n" + header["description"]
        pr_url = None
        if create_pr:
            num = len(r.prs) + 1
            ref = f"refs/pr/{num}"
            pr_url = f"{self.hub._repo_url(r)}/discussions/{num}"
            base = rev if not _SHA.fullmatch(rev) else "main"
            r.prs.append(
                {
                    "num": num,
                    "title": header.get("summary") or "commit",
                    "ref": ref,
                    "base": base,
                    "status": "open",
                    "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                }
            )
        elif rev in r.refs or rev.removeprefix("refs/heads/") in r.refs:
            ref = rev.removeprefix("refs/heads/")
        else:
            raise HubError(400, f"Cannot commit to {rev}: not a branch")
        commit = self.hub._add_commit(r, head.oid, message, files, ref)
        return (
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "pullRequestUrl": pr_url,
                "commitUrl": f"{self.hub._repo_url(r)}/commit/{commit.oid}",
            },
            {},
        )

    def discussions(self, req, body, kind, repo):
        r = self.hub._readable_repo(req, kind, repo)
        items = [self._discussion(r, pr) for pr in reversed(r.prs)]
        return 200, {"discussions": items, "count": len(items), "start": 0, "numClosedDiscussions": 0}, {}

    def discussion(self, req, body, kind, repo, num):
        r = self.hub._readable_repo(req, kind, repo)
        pr = next((pr for pr in r.prs if pr["num"] == int(num)), None)
        if pr is None:
            raise HubError(404, f"Discussion {num} not found")
        details = {
            **self._discussion(r, pr),
            "events": [],
            "filesWithConflicts": [],
            "diff": "",
            "changes": {"base": f"refs/heads/{pr['base']}", "mergeCommitId": None},
        }
        return 200, details, {}

    def _discussion(self, r: Repo, pr: dict) -> dict:
        return {
            "num": pr["num"],
            "title": pr["title"],
            "status": pr["status"],
            "isPullRequest": True,
            "createdAt": pr["createdAt"],
            "author": {"name": "user"},
            "repo": {"name": r.repo_id, "type": r.repo_type},
        }

    def resolve_file(self, req, body, kind, repo, rev, path):
        commit = self.hub.resolve(self.hub._readable_repo(req, kind, repo), rev)
        headers = {"X-Repo-Commit": commit.oid}
        if path not in commit.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers)
        content = commit.files[path]
        headers["ETag"] = f'"{git_blob_sha1(content)}"'  # no redirect, no X-Linked-*: served directly
        return 200, content, headers


def _front_matter(readme: str):
    """The YAML metadata block of a README (None if there is none); raises yaml.YAMLError."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", readme, re.S)
    return yaml.safe_load(match.group(1)) if match else None


_ROUTES = [  # (method, regex on the raw path, handler); HEAD uses the GET routes
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", r"/api/whoami-v2", "whoami"),
    ("GET", _API, "repo_info"),
    ("GET", _API + r"/revision/(?P<rev>[^/]+)", "repo_info"),
    ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
    ("GET", _API + r"/refs", "list_refs"),
    ("POST", _API + r"/branch/(?P<branch>[^/]+)", "create_branch"),
    ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", _API + r"/commit/(?P<rev>[^/]+)", "commit"),
    ("GET", _API + r"/discussions", "discussions"),
    ("GET", _API + r"/discussions/(?P<num>\d+)", "discussion"),
    ("GET", r"/" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve_file"),
]
