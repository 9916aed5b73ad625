"""What a benchmark run measures: the servers (ours, peers, limits) and the clients that feed them.

Servers
    tusd-py        this project (`python -m tusd_py`), file store or S3 store; state beside the
                   files or in Redis (one endpoint, Sentinel or Cluster: the RedisShape)
    sink           the file-store limit for Python: benchmarks/sink.py, a bare uvicorn app
                   writing bodies
    nginx          the C limit for bodies onto disk: benchmarks/nginx_limit.py (curl only)
    tus-node       @tus/server with @tus/file-store or @tus/s3-store (npm), benchmarks/peers/
    tuspyserver    tuspyserver (PyPI), a FastAPI router on uvicorn, in the peers' own venv
The S3 limit is not a server: `s3_direct` uploads the bytes straight to the S3 endpoint.

Clients
    tus-js-client  benchmarks/peers/client.mjs: one PATCH, or fixed-size chunks
    curl           POST, then `curl -T file -X PATCH`: a client fast enough not to be the bottleneck
    load.mjs       many uploads at once (and the small part's fallback when wrk is missing)
    wrk            streams of small requests (HEAD, 64 KiB PATCH): benchmarks/wrk_small.lua, one
                   connection per wrk thread, so that the client in C is not what bounds them
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from benchmarks.nginx_limit import nginx_binary
from benchmarks.procs import Server, run_json, start_server

MIB = 1024**2
PART_SIZE = 8 * MIB  # tusd-py's default S3 part size; the limit and @tus/s3-store use it too
PART_CONCURRENCY = 4  # tusd-py's default part uploads in flight; the limit uses it too
METADATA = ",".join(
    f"{key} {base64.b64encode(value.encode()).decode()}"
    for key, value in (("filename", "bench.bin"), ("filetype", "application/octet-stream"))
)
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

Store = Literal["file", "s3"]
Role = Literal["ours", "peer", "limit"]
# Where tusd-py keeps its state: beside the files, or in Redis as one endpoint (the lone
# redis-server, or the Sentinel group's primary named directly), through Sentinel, or on a Cluster.
State = Literal["local", "redis", "redis-primary", "sentinel", "cluster"]


@dataclass
class Tools:
    """Where everything is on this machine, and the shared backends of the run."""

    repo: Path
    work: Path  # scratch space: upload directories, source files
    peers: Path  # benchmarks/.peers: node_modules, the copied Node scripts, venv
    python: str = sys.executable  # the project's venv
    node: str | None = shutil.which("node")
    curl: str | None = shutil.which("curl")
    wrk: str | None = shutil.which("wrk")
    s3_endpoint: str | None = None
    redis_url: str | None = None  # a lone redis-server
    # The redis-shapes part's: a primary with one replica behind three Sentinels (their
    # addresses, the group's name, the primary's own URL), and a Redis Cluster's seed node.
    redis_sentinels: str | None = None
    redis_sentinel_master: str | None = None
    redis_primary_url: str | None = None
    redis_cluster_url: str | None = None
    _s3: Any = field(default=None, repr=False)

    @property
    def peers_python(self) -> Path:
        return self.peers / "venv" / "bin" / "python"

    def script(self, name: str) -> str:
        """A script of benchmarks/peers, run from its copy in `peers` so that Node resolves the
        packages installed there."""
        return str(self.peers / name)

    def install_scripts(self) -> None:
        self.peers.mkdir(parents=True, exist_ok=True)
        for source in (self.repo / "benchmarks" / "peers").iterdir():
            if source.suffix in (".mjs", ".py"):
                shutil.copyfile(source, self.peers / source.name)

    def has_node_module(self, name: str) -> bool:
        return self.node is not None and (self.peers / "node_modules" / name).is_dir()

    def s3(self) -> Any:
        """A synchronous S3 client for setting up and checking buckets (not timed)."""
        if self._s3 is None:
            import botocore.session

            self._s3 = botocore.session.get_session().create_client(
                "s3",
                endpoint_url=self.s3_endpoint,
                region_name=S3_ENV["AWS_DEFAULT_REGION"],
                aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            )
        return self._s3


# -- servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    key: str  # unique in a run, used in results
    label: str
    store: Store
    role: Role
    command: Callable[[Tools, str], list[str]]  # (tools, upload dir or bucket) -> argv
    missing: Callable[[Tools], str | None]  # why it cannot run here, or None
    env: dict[str, str] = field(default_factory=dict)
    curl_only: bool = False  # speaks just POST + one PATCH (no offsets for resumes or chunks)


def _tusd_py(
    store: Store, state: State, workers: int = 1, wait_replicas: int = 0
) -> Callable[[Tools, str], list[str]]:
    def command(tools: Tools, place: str) -> list[str]:
        argv = [tools.python, "-m", "tusd_py", "--port", "0", "--log-level", "warning"]
        argv += ["--workers", str(workers)]
        if store == "s3":
            assert tools.s3_endpoint
            argv += ["--s3-bucket", place, "--s3-endpoint", tools.s3_endpoint]
        else:
            argv += ["--upload-dir", place]
        if state != "local":
            argv += _redis_args(tools, state)
            argv += ["--redis-prefix", f"bench-{place[-8:]}"]
        if wait_replicas:
            argv += ["--redis-wait-replicas", str(wait_replicas)]
        return argv

    return command


def _redis_args(tools: Tools, state: State) -> list[str]:
    if state == "redis":
        assert tools.redis_url
        return ["--redis-url", tools.redis_url]
    if state == "redis-primary":
        assert tools.redis_primary_url
        return ["--redis-url", tools.redis_primary_url]
    if state == "sentinel":
        assert tools.redis_sentinels and tools.redis_sentinel_master
        return [
            "--redis-sentinels",
            tools.redis_sentinels,
            "--redis-sentinel-master",
            tools.redis_sentinel_master,
        ]
    assert tools.redis_cluster_url
    return ["--redis-url", tools.redis_cluster_url, "--redis-cluster"]


def _needs_redis(tools: Tools) -> str | None:
    return None if tools.redis_url else "no redis-server"


def _needs_sentinel(tools: Tools) -> str | None:
    return None if tools.redis_sentinels else "no Sentinel group"


def _needs_cluster(tools: Tools) -> str | None:
    return None if tools.redis_cluster_url else "no Redis Cluster"


def _ready(tools: Tools) -> str | None:
    return None


def _node_peer(module: str) -> Callable[[Tools], str | None]:
    def missing(tools: Tools) -> str | None:
        if tools.node is None:
            return "node is not installed"
        if not tools.has_node_module(module):
            return f"{module} is not installed in {tools.peers} (run benchmarks/run)"
        return None

    return missing


def _nginx_missing(tools: Tools) -> str | None:
    return None if nginx_binary() else "nginx is not installed (apt-get install nginx-light)"


def _tuspyserver_missing(tools: Tools) -> str | None:
    if not tools.peers_python.exists():
        return f"no peers venv at {tools.peers_python.parent.parent} (run benchmarks/run)"
    found = subprocess.run(
        [str(tools.peers_python), "-c", "import tuspyserver"], capture_output=True, check=False
    )
    return None if found.returncode == 0 else "tuspyserver is not installed in the peers venv"


SERVERS: dict[str, ServerSpec] = {
    spec.key: spec
    for spec in (
        ServerSpec(
            "tusd-py",
            "tusd-py (file)",
            "file",
            "ours",
            _tusd_py("file", "local"),
            _ready,
        ),
        ServerSpec(
            "sink",
            "limit: minimal uvicorn sink",
            "file",
            "limit",
            lambda tools, place: [tools.python, "-m", "benchmarks.sink", "--dir", place],
            _ready,
        ),
        ServerSpec(
            "nginx",
            "limit: nginx writing bodies to files",
            "file",
            "limit",
            lambda tools, place: [tools.python, "-m", "benchmarks.nginx_limit", "--dir", place],
            _nginx_missing,
            curl_only=True,
        ),
        ServerSpec(
            "tus-node",
            "@tus/server + @tus/file-store",
            "file",
            "peer",
            lambda tools, place: [
                tools.node or "node",
                tools.script("tus-node-server.mjs"),
                "file",
                place,
            ],
            _node_peer("@tus/file-store"),
        ),
        ServerSpec(
            "tuspyserver",
            "tuspyserver",
            "file",
            "peer",
            lambda tools, place: [
                str(tools.peers_python),
                tools.script("tuspyserver_app.py"),
                place,
            ],
            _tuspyserver_missing,
        ),
        ServerSpec(
            "tusd-py-redis",
            "tusd-py (file, Redis state)",
            "file",
            "ours",
            _tusd_py("file", "redis"),
            _needs_redis,
        ),
        ServerSpec(
            "tusd-py-w2",
            "tusd-py (file, --workers 2)",
            "file",
            "ours",
            _tusd_py("file", "local", workers=2),
            _ready,
        ),
        ServerSpec(
            "tusd-py-redis-w2",
            "tusd-py (file, Redis state, --workers 2)",
            "file",
            "ours",
            _tusd_py("file", "redis", workers=2),
            _needs_redis,
        ),
        ServerSpec(
            "tusd-py-sentinel",
            "tusd-py (file, Redis state through Sentinel)",
            "file",
            "ours",
            _tusd_py("file", "sentinel"),
            _needs_sentinel,
        ),
        ServerSpec(
            "tusd-py-cluster",
            "tusd-py (file, Redis Cluster state)",
            "file",
            "ours",
            _tusd_py("file", "cluster"),
            _needs_cluster,
        ),
        ServerSpec(
            "tusd-py-primary-wait1",
            "tusd-py (file, Redis state on the Sentinel group's primary, --redis-wait-replicas 1)",
            "file",
            "ours",
            _tusd_py("file", "redis-primary", wait_replicas=1),
            _needs_sentinel,
        ),
        ServerSpec(
            "tusd-py-sentinel-wait1",
            "tusd-py (file, Redis state through Sentinel, --redis-wait-replicas 1)",
            "file",
            "ours",
            _tusd_py("file", "sentinel", wait_replicas=1),
            _needs_sentinel,
        ),
        ServerSpec(
            "tusd-py-cluster-wait1",
            "tusd-py (file, Redis Cluster state, --redis-wait-replicas 1)",
            "file",
            "ours",
            _tusd_py("file", "cluster", wait_replicas=1),
            _needs_cluster,
        ),
        ServerSpec(
            "tusd-py-s3",
            "tusd-py (S3, Redis state)",
            "s3",
            "ours",
            _tusd_py("s3", "redis"),
            _needs_redis,
        ),
        ServerSpec(
            "tus-node-s3",
            "@tus/server + @tus/s3-store",
            "s3",
            "peer",
            lambda tools, place: [
                tools.node or "node",
                tools.script("tus-node-server.mjs"),
                "s3",
                place,
                tools.s3_endpoint or "",
                str(PART_SIZE),
            ],
            _node_peer("@tus/s3-store"),
        ),
    )
}


@dataclass
class Target:
    """A running server with its own upload directory or bucket."""

    spec: ServerSpec
    server: Server
    place: str  # upload directory or bucket

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def clean(self, tools: Tools) -> None:
        """Remove every upload, so the next measurement starts empty (not timed)."""
        if self.spec.store == "file":
            for path in Path(self.place).iterdir():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        else:
            empty_bucket(tools, self.place)

    def holds_upload_of(self, tools: Tools, size: int) -> bool:
        """Whether storage holds a whole upload of `size` bytes: a check that bytes landed."""
        if self.spec.store == "file":
            return any(
                p.is_file() and p.stat().st_size == size for p in Path(self.place).rglob("*")
            )
        listing = tools.s3().list_objects_v2(Bucket=self.place)
        return any(int(item["Size"]) == size for item in listing.get("Contents", []))


def empty_bucket(tools: Tools, bucket: str) -> None:
    s3 = tools.s3()
    for _ in range(100):  # bounded: 1000 keys a page
        keys = [{"Key": o["Key"]} for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        if not keys:
            break
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])


def launch(tools: Tools, spec: ServerSpec) -> Target:
    if spec.store == "file":
        place = tools.work / "uploads" / spec.key
        place.mkdir(parents=True, exist_ok=True)
        where = str(place)
    else:
        where = f"bench-{spec.key}"
        tools.s3().create_bucket(Bucket=where)
    env = {**S3_ENV, **spec.env}
    server = start_server(spec.key, spec.command(tools, where), env=env, cwd=tools.repo)
    return Target(spec, server, where)


# -- clients ----------------------------------------------------------------------------------


def tus_js(tools: Tools, endpoint: str, path: Path, chunk_size: int | None) -> dict[str, Any]:
    """tus-js-client in Node: one PATCH (`chunk_size` None) or PATCHes of `chunk_size` bytes."""
    chunk = "Infinity" if chunk_size is None else str(chunk_size)
    node = tools.node or "node"
    return run_json([node, tools.script("client.mjs"), endpoint, str(path), chunk])


def curl_upload(tools: Tools, endpoint: str, path: Path) -> dict[str, Any]:
    """POST, then curl streams the file as one PATCH; the clock covers both."""
    size = path.stat().st_size
    started = time.perf_counter()
    request = urllib.request.Request(
        endpoint,
        method="POST",
        headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size), "Upload-Metadata": METADATA},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            location = urllib.parse.urljoin(endpoint, response.headers["Location"])
    except OSError as exc:
        return {"ok": False, "error": f"POST failed: {exc}"}
    done = subprocess.run(
        [
            tools.curl or "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
            "-X",
            "PATCH",
            "-T",
            str(path),
            "-H",
            "Tus-Resumable: 1.0.0",
            "-H",
            "Upload-Offset: 0",
            "-H",
            "Content-Type: application/offset+octet-stream",
            "-H",
            "Expect:",  # no 100-continue round trip, for every server alike
            location,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0 or done.stdout.strip() != "204":
        return {"ok": False, "error": f"curl: {done.stdout.strip()} {done.stderr.strip()[-300:]}"}
    return {"ok": True, "seconds": seconds}


def s3_direct(tools: Tools, bucket: str, path: Path) -> dict[str, Any]:
    assert tools.s3_endpoint
    return run_json(
        [
            tools.python,
            "-m",
            "benchmarks.s3_direct",
            tools.s3_endpoint,
            bucket,
            "direct.bin",
            str(path),
            str(PART_SIZE),
            str(PART_CONCURRENCY),
        ],
        env=S3_ENV,
        cwd=tools.repo,
    )


def load(tools: Tools, *args: str | float) -> dict[str, Any]:
    node = tools.node or "node"
    return run_json([node, tools.script("load.mjs"), *map(str, args)])


def create_uploads(endpoint: str, count: int, length: int) -> list[str]:
    """POST `count` uploads of `length` bytes (not timed); their URLs."""
    urls = []
    for _ in range(count):
        request = urllib.request.Request(
            endpoint,
            method="POST",
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(length),
                "Upload-Metadata": METADATA,
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            urls.append(urllib.parse.urljoin(endpoint, response.headers["Location"]))
    return urls


def _head_says_no_body(url: str) -> bool:
    request = urllib.request.Request(url, method="HEAD", headers={"Tus-Resumable": "1.0.0"})
    with urllib.request.urlopen(request, timeout=30) as response:
        length: str | None = response.headers.get("Content-Length")
        return length == "0"


def wrk_small(
    tools: Tools, endpoint: str, mode: str, connections: int, seconds: float, patch_size: int = 0
) -> dict[str, Any]:
    """HEADs or PATCHes back to back from wrk (benchmarks/wrk_small.lua), `connections`
    threads with one connection and one upload each."""
    try:
        urls = create_uploads(endpoint, connections, 2**40)  # never full: every PATCH has room
        if mode == "head" and not _head_says_no_body(urls[0]):
            # A HEAD answer may leave out Content-Length (@tus/server) or give the length of
            # the GET's body (tuspyserver), but wrk's parser does not know it sent a HEAD and
            # waits for that body, or for the connection to close.
            return {"head_without_length": True}
    except OSError as exc:
        return {"ok": False, "errors": 1, "error": f"POST failed: {exc}"}
    listing = tools.work / f"wrk-uploads-{os.getpid()}.txt"
    listing.write_text("".join(urllib.parse.urlsplit(url).path + "\n" for url in urls))
    env = {
        "TUSD_BENCH_UPLOADS": str(listing),
        "TUSD_BENCH_MODE": mode,
        "TUSD_BENCH_PATCH_SIZE": str(patch_size),
    }
    script = tools.repo / "benchmarks" / "wrk_small.lua"
    argv = [tools.wrk or "wrk", "-t", str(connections), "-c", str(connections)]
    whole = max(1, round(seconds))  # wrk takes whole seconds only
    argv += ["-d", f"{whole}s", "--timeout", "10s", "-s", str(script), endpoint]
    try:
        found = run_json(argv, env=env, timeout=whole + 60)
    finally:
        listing.unlink(missing_ok=True)
    if "requests" in found:  # every request the server answered, as load.mjs counts them
        found["total"] = int(found["requests"]) + connections
    return found
