"""One benchmark run: tusd-py beside its peers and the limits, interleaved, on this machine.

    benchmarks/run                       the full run; writes docs/performance.md's results
    benchmarks/run --quick               small sizes, one round: a minute, to try things
    python -m benchmarks.driver --help   every knob

Each part starts its servers once and then runs rounds; in every round each (server, client)
case runs once, in an order rotated from round to round, so a busy spell on the machine hits all
cases alike. Results are medians over rounds, and ratios are taken between medians of one run.
Each part is independent: `--parts file,s3` runs only those.

Parts
    file         one large upload to the file stores, by tus-js-client (one PATCH, 8 MiB chunks)
                 and curl; the limits are the sink fed by the same client and, for curl, nginx
    s3           one large upload to S3 (moto's server), by tus-js-client (one PATCH, 1 MiB
                 chunks) and curl; the limit is a direct aiobotocore multipart upload
    s3-rss       one --rss-size upload to S3 by curl, for the servers' peak memory
    concurrency  many uploads at once (--concurrency, e.g. 200x1MiB,20x64MiB), file and S3;
                 tusd-py with one worker and --workers 2 (local and Redis state)
    small        HEAD and 64 KiB PATCH requests per second from wrk, file store with local and
                 Redis state, one worker and --workers 2
    redis-shapes the same requests with Redis state on one redis-server, through Sentinel (a
                 primary, one replica, three Sentinels) and on a Cluster (three primaries, three
                 replicas), and with --redis-wait-replicas 1; file store, one worker
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from benchmarks import report
from benchmarks.procs import BenchmarkError, wait_until_quiet
from benchmarks.targets import (
    MIB,
    SERVERS,
    Target,
    Tools,
    curl_upload,
    empty_bucket,
    launch,
    load,
    s3_direct,
    tus_js,
    wrk_small,
)

REPO = Path(__file__).resolve().parent.parent
# Of a failed case, the end of its server's output (which covers every round so far): enough
# for the warnings that led up to the failure, not only its last lines.
SERVER_LOG_KEPT = 20_000
PARTS = ("file", "s3", "s3-rss", "concurrency", "small", "redis-shapes")
# The redis-shapes part's servers, each with the Redis it runs on; "single" is the lone
# redis-server every Redis part shares, the others are started by the part itself.
RedisShape = Literal["single", "sentinel", "cluster"]
REDIS_SHAPES: dict[str, RedisShape] = {
    "tusd-py-redis": "single",
    "tusd-py-sentinel": "sentinel",
    "tusd-py-cluster": "cluster",
    "tusd-py-primary-wait1": "sentinel",
    "tusd-py-sentinel-wait1": "sentinel",
    "tusd-py-cluster-wait1": "cluster",
}

Record = dict[str, Any]


def parse_size(text: str) -> int:
    units = {"k": 1024, "m": MIB, "g": 1024 * MIB}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def parse_loads(text: str) -> list[tuple[int, int]]:
    """'200x1MiB,20x64MiB' -> [(200, 1 MiB), (20, 64 MiB)]."""
    loads = []
    for item in text.split(","):
        count, size = item.strip().split("x", 1)
        loads.append((int(count), parse_size(size)))
    return loads


def size_label(size: int) -> str:
    if size >= 1024 * MIB and size % (1024 * MIB) == 0:
        return f"{size // (1024 * MIB)} GiB"
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


@dataclass
class Options:
    size: int
    s3_size: int
    rss_size: int
    rounds: int
    s3_rounds: int
    concurrency: list[tuple[int, int]]
    concurrency_rounds: int
    small_seconds: float
    small_rounds: int
    connections: int
    patch_size: int
    file_chunk: int
    s3_chunk: int
    parts: list[str]
    servers: list[str] | None
    flush: bool = False  # sync() before each case: no dirty pages of the last one left


@dataclass
class Case:
    """One thing measured per round: a client against a server (or the S3 limit, no server)."""

    server: str  # a SERVERS key, or "s3-direct"
    client: str
    run: Callable[[], Record]


class Run:
    def __init__(self, tools: Tools, options: Options) -> None:
        self.tools = tools
        self.options = options
        self.records: list[Record] = []
        self.skipped: dict[str, str] = {}  # server or client -> why it was not measured
        self.started = time.time()

    def log(self, text: str) -> None:
        print(f"[{time.time() - self.started:7.1f}s] {text}", flush=True)

    # -- servers ------------------------------------------------------------------------------

    def wanted(self, keys: list[str]) -> list[str]:
        chosen = [k for k in keys if self.options.servers is None or k in self.options.servers]
        usable = []
        for key in chosen:
            why = SERVERS[key].missing(self.tools)
            if why is None:
                usable.append(key)
            else:
                self.skipped[key] = why
                self.log(f"skipping {key}: {why}")
        return usable

    @contextlib.contextmanager
    def servers(self, keys: list[str]) -> Iterator[dict[str, Target]]:
        targets: dict[str, Target] = {}
        try:
            for key in self.wanted(keys):
                try:
                    targets[key] = launch(self.tools, SERVERS[key])
                except BenchmarkError as exc:
                    self.skipped[key] = f"did not start: {str(exc)[:300]}"
                    self.log(f"skipping {key}: {exc}")
            yield targets
        finally:
            for target in targets.values():
                target.server.stop()

    # -- measuring ----------------------------------------------------------------------------

    def measured(self, target: Target | None, run: Callable[[], Record], **labels: Any) -> Record:
        """Run one case: clean storage, reset the server's peak memory, run, record."""
        if target is not None:
            target.clean(self.tools)
            target.server.reset_peak_rss()
        if self.options.flush:
            os.sync()
        busy = wait_until_quiet()
        if busy >= 0.15:
            self.log(f"the machine did not go quiet before this case: {busy:.2f} cores busy")
        load_before = os.getloadavg()[0]
        cpu_before = target.server.cpu_seconds() if target is not None else 0.0
        result = run()
        record: Record = {**labels, **result, "load": load_before}
        if target is not None:
            record["peak_rss"] = target.server.peak_rss()
            record["server_cpu"] = target.server.cpu_seconds() - cpu_before
            if not target.server.alive():
                record["ok"] = False
                record["error"] = f"server died: {target.server.output[-500:]}"
            if not record.get("ok", True):
                record["server_log"] = target.server.output[-SERVER_LOG_KEPT:]
        self.records.append(record)
        status = "ok" if record.get("ok", True) else f"FAILED {record.get('error')}"
        summary = report.describe(record)
        self.log(
            f"{labels.get('part')} r{labels.get('round')} {labels.get('server')} "
            f"/ {labels.get('client')}: {summary} {status}"
        )
        return record

    def rounds(self, part: str, cases: list[Case], targets: dict[str, Target], rounds: int) -> None:
        for round_no in range(rounds):
            shift = round_no % max(1, len(cases))
            for case in cases[shift:] + cases[:shift]:
                self.measured(
                    targets.get(case.server),
                    case.run,
                    part=part,
                    round=round_no,
                    server=case.server,
                    client=case.client,
                )

    def source(self, size: int) -> Path:
        path = self.tools.work / f"source-{size}.bin"
        if not path.exists() or path.stat().st_size != size:
            rng = random.Random(size)
            with open(path, "wb") as f:
                left = size
                while left:
                    block = rng.randbytes(min(left, 4 * MIB))
                    f.write(block)
                    left -= len(block)
        return path

    def upload_run(self, target: Target, client: Callable[[], Record], size: int) -> Record:
        result = client()
        if result.get("ok") and not target.holds_upload_of(self.tools, size):
            result = {**result, "ok": False, "error": f"no stored upload of {size} bytes"}
        return {**result, "bytes": size}

    def clients(self, chunk: int) -> list[tuple[str, Callable[[str, Path], Record]]]:
        tools = self.tools
        chosen: list[tuple[str, Callable[[str, Path], Record]]] = []
        if tools.has_node_module("tus-js-client"):
            chosen.append(("tus-js-client, one PATCH", lambda ep, p: tus_js(tools, ep, p, None)))
            chosen.append(
                (
                    f"tus-js-client, {size_label(chunk)} chunks",
                    lambda ep, p: tus_js(tools, ep, p, chunk),
                )
            )
        else:
            self.skipped["tus-js-client"] = f"not installed in {tools.peers} (run benchmarks/run)"
        if tools.curl:
            chosen.append(("curl, one PATCH", lambda ep, p: curl_upload(tools, ep, p)))
        else:
            self.skipped["curl"] = "curl is not installed"
        return chosen

    # -- parts --------------------------------------------------------------------------------

    def part_file(self) -> None:
        size = self.options.size
        path = self.source(size)
        with self.servers(["tusd-py", "sink", "nginx", "tus-node", "tuspyserver"]) as targets:
            cases = [
                Case(key, name, self._upload_case(target, client, path, size))
                for name, client in self.clients(self.options.file_chunk)
                for key, target in targets.items()
                if name.startswith("curl") or not target.spec.curl_only
            ]
            self.rounds("file", cases, targets, self.options.rounds)

    def _upload_case(
        self, target: Target, client: Callable[[str, Path], Record], path: Path, size: int
    ) -> Callable[[], Record]:
        return lambda: self.upload_run(target, lambda: client(target.endpoint, path), size)

    def _direct_case(self, bucket: str, path: Path, size: int) -> Callable[[], Record]:
        def run() -> Record:
            empty_bucket(self.tools, bucket)
            return {**s3_direct(self.tools, bucket, path), "bytes": size}

        return run

    def part_s3(self) -> None:
        size = self.options.s3_size
        path = self.source(size)
        bucket = "bench-s3-direct"
        self.tools.s3().create_bucket(Bucket=bucket)
        with self.servers(["tusd-py-s3", "tus-node-s3"]) as targets:
            cases = [
                Case("s3-direct", "aiobotocore multipart", self._direct_case(bucket, path, size))
            ]
            cases += [
                Case(key, name, self._upload_case(target, client, path, size))
                for name, client in self.clients(self.options.s3_chunk)
                for key, target in targets.items()
            ]
            self.rounds("s3", cases, targets, self.options.s3_rounds)
        empty_bucket(self.tools, bucket)

    def part_s3_rss(self) -> None:
        size = self.options.rss_size
        path = self.source(size)
        tools = self.tools
        if not tools.curl:
            self.skipped["s3-rss"] = "curl is not installed"
            return
        with self.servers(["tusd-py-s3", "tus-node-s3"]) as targets:
            cases = [
                Case(
                    key,
                    f"curl, one PATCH, {size_label(size)}",
                    self._upload_case(target, lambda ep, p: curl_upload(tools, ep, p), path, size),
                )
                for key, target in targets.items()
            ]
            self.rounds("s3-rss", cases, targets, 1)
            for target in targets.values():
                target.clean(tools)
        path.unlink(missing_ok=True)

    def part_concurrency(self) -> None:
        if self.tools.node is None:
            self.skipped["concurrency"] = "node is not installed"
            return
        keys = [
            "tusd-py",
            "tusd-py-w2",
            "tusd-py-redis-w2",
            "sink",
            "tus-node",
            "tuspyserver",
            "tusd-py-s3",
            "tus-node-s3",
        ]
        with self.servers(keys) as targets:
            cases = [
                Case(key, f"{count} x {size_label(size)}", self._many_case(target, count, size))
                for count, size in self.options.concurrency
                for key, target in targets.items()
            ]
            self.rounds("concurrency", cases, targets, self.options.concurrency_rounds)

    def _many_case(self, target: Target, count: int, size: int) -> Callable[[], Record]:
        def run() -> Record:
            result = load(self.tools, "uploads", target.endpoint, count, size)
            durations = sorted(result.pop("durations", []))
            errors = int(result.get("errors", count))
            return {
                **result,
                "ok": errors == 0,
                "count": count,
                "bytes": count * size,
                "p50": _percentile(durations, 50),
                "p99": _percentile(durations, 99),
            }

        return run

    def part_small(self) -> None:
        if self.tools.node is None:
            self.skipped["small"] = "node is not installed"
            return
        opts = self.options
        keys = [
            "tusd-py",
            "tusd-py-w2",
            "tusd-py-redis",
            "tusd-py-redis-w2",
            "sink",
            "tus-node",
            "tuspyserver",
        ]
        with self.servers(keys) as targets:
            self.rounds("small", self._small_cases(targets), targets, opts.small_rounds)

    def part_redis_shapes(self) -> None:
        if self.tools.node is None:
            self.skipped["redis-shapes"] = "node is not installed"
            return
        wanted = self.options.servers
        keys = [k for k in REDIS_SHAPES if wanted is None or k in wanted]
        shapes = {REDIS_SHAPES[k] for k in keys}
        with redis_shapes(self.tools, shapes, self.skipped), self.servers(keys) as targets:
            cases = self._small_cases(targets)
            self.rounds("redis-shapes", cases, targets, self.options.small_rounds)

    def _small_cases(self, targets: dict[str, Target]) -> list[Case]:
        """HEAD and small PATCH for each server."""
        patch = f"PATCH {size_label(self.options.patch_size)}"
        cases = []
        for key, target in targets.items():
            cases.append(Case(key, "HEAD", self._small_case(target, "head")))
            cases.append(Case(key, patch, self._small_case(target, "patch")))
        return cases

    def _small_case(self, target: Target, mode: str) -> Callable[[], Record]:
        """HEADs or PATCHes from wrk (in C: one core of Node capped the servers' rates), or
        from load.mjs where wrk is missing or cannot read the server's HEAD answers; the record
        says which (`generator`)."""
        opts = self.options
        tools = self.tools
        size = opts.patch_size if mode == "patch" else 0
        args: list[str | float] = [mode, target.endpoint, opts.connections, opts.small_seconds]
        if mode == "patch":
            args.append(opts.patch_size)

        def generate() -> Record:
            if tools.wrk:
                found = wrk_small(
                    tools, target.endpoint, mode, opts.connections, opts.small_seconds, size
                )
                if not found.get("head_without_length"):
                    return {**found, "generator": "wrk"}
            return {**load(tools, *args), "generator": "load.mjs"}

        def run() -> Record:
            result = generate()
            seconds = float(result.get("seconds") or 0) or 1.0
            errors = int(result.get("errors", 1))
            requests = float(result.get("requests", 0))
            if not requests and errors == 0:
                errors, result["error"] = 1, "no request was answered"
            return {**result, "ok": errors == 0, "rps": requests / seconds}

        return run

    def execute(self) -> None:
        parts = {
            "file": self.part_file,
            "s3": self.part_s3,
            "s3-rss": self.part_s3_rss,
            "concurrency": self.part_concurrency,
            "small": self.part_small,
            "redis-shapes": self.part_redis_shapes,
        }
        for name in self.options.parts:
            self.log(f"== {name}")
            parts[name]()


def _percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


# moto keeps objects and parts in memory, as S3 keeps them off this machine: by default it spills
# every body over 5 MiB to a temp file, and its CPU per 256 MiB upload then alternated between
# ~1.35 and ~2.0 s from one upload to the next, whoever sent it.
MOTO_ENV = {"MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(4 * 1024**3)}


@contextlib.contextmanager
def backends(tools: Tools, parts: list[str]) -> Iterator[None]:
    """moto's S3 server and a redis-server for the parts that need them (tests/support/)."""
    from tests.support.servers import redis_server, s3_server

    with contextlib.ExitStack() as stack:
        if {"s3", "s3-rss", "concurrency"} & set(parts):
            tools.s3_endpoint = stack.enter_context(s3_server(MOTO_ENV)).endpoint
        if {"s3", "s3-rss", "concurrency", "small", "redis-shapes"} & set(parts):
            try:
                tools.redis_url = stack.enter_context(redis_server()).url
            except RuntimeError as exc:
                print(f"no Redis: {exc}", flush=True)
        yield


@contextlib.contextmanager
def redis_shapes(tools: Tools, shapes: set[RedisShape], skipped: dict[str, str]) -> Iterator[None]:
    """For the redis-shapes part, as the integration tests start them (tests/support/): a
    primary with one replica behind three Sentinels, and a six-node Redis Cluster, each only if
    one of `shapes` needs it. One that does not start is noted in `skipped`; its servers are
    then skipped as missing it."""
    from tests.support.redis_cluster import redis_cluster
    from tests.support.redis_topologies import MASTER, sentinel_group

    with contextlib.ExitStack() as stack:
        try:
            if "sentinel" in shapes:
                try:
                    group = stack.enter_context(sentinel_group(replicas=1))
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    skipped["Sentinel"] = f"did not start: {str(exc)[:300]}"
                else:
                    tools.redis_sentinels = group.sentinel_addresses
                    tools.redis_sentinel_master = MASTER
                    tools.redis_primary_url = f"redis://{group.primary.address}/0"
            if "cluster" in shapes:
                try:
                    tools.redis_cluster_url = stack.enter_context(redis_cluster()).url
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    skipped["Redis Cluster"] = f"did not start: {str(exc)[:300]}"
            yield
        finally:
            tools.redis_sentinels = tools.redis_sentinel_master = None
            tools.redis_primary_url = tools.redis_cluster_url = None


def mem_free_mib() -> int | None:
    """Free memory (not counting the page cache) in MiB: little of it means reclaim costs."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemFree:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def environment(tools: Tools) -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return "not installed"
        return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"

    node_versions = {}
    for name in ("@tus/server", "@tus/file-store", "@tus/s3-store", "tus-js-client"):
        package = tools.peers / "node_modules" / name / "package.json"
        if package.exists():
            node_versions[name] = json.loads(package.read_text())["version"]
    peers_python = str(tools.peers_python)
    commit = version(["git", "-C", str(tools.repo), "rev-parse", "--short", "HEAD"])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "node": version([tools.node or "node", "--version"]),
        "curl": version([tools.curl or "curl", "--version"]),
        "peers": node_versions,
        "tuspyserver": version(
            [peers_python, "-c", "import importlib.metadata as m; print(m.version('tuspyserver'))"]
        ),
        "load_start": os.getloadavg()[0],
        "mem_free_start": mem_free_mib(),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="small sizes, one round (overrides the sizes)")
    add("--size", default="256MiB", help="file part: upload size")
    add("--s3-size", default="256MiB", help="s3 part: upload size")
    add("--rss-size", default="1GiB", help="s3-rss part: upload size")
    add("--rounds", type=int, default=7, help="file part: rounds")
    add("--s3-rounds", type=int, default=5, help="s3 part: rounds")
    add(
        "--concurrency",
        default="1x1MiB,10x1MiB,100x1MiB,200x1MiB,1000x1MiB,20x64MiB",
        help="uploads at once x size, ... (the 1 MiB steps are the scaling table)",
    )
    add("--concurrency-rounds", type=int, default=3)
    add(
        "--flush",
        action="store_true",
        help="sync() before each case, so none starts while the last one's dirty pages are "
        "still being written back (without it, the page cache carries over as it would in use)",
    )
    add("--small-seconds", type=float, default=5.0, help="small part: seconds per measurement")
    add("--small-rounds", type=int, default=3)
    add("--connections", type=int, default=8, help="small part: connections")
    add("--patch-size", default="64KiB", help="small part: PATCH body size")
    add("--file-chunk", default="8MiB", help="file part: tus-js-client chunk size")
    add("--s3-chunk", default="1MiB", help="s3 part: tus-js-client chunk size")
    add("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    add("--servers", default=None, help=f"only these servers ({', '.join(SERVERS)})")
    add("--peers-dir", type=Path, default=REPO / "benchmarks" / ".peers")
    add("--work-dir", type=Path, default=None, help="scratch space (default: a temp dir)")
    add(
        "--out",
        type=Path,
        default=None,
        help="results directory (default: benchmarks/results/<time>)",
    )
    add(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the results into docs/performance.md and docs/performance.png",
    )
    return parser


def options_from(args: argparse.Namespace) -> Options:
    if args.quick:
        args.size = args.s3_size = "16MiB"
        args.rss_size = "64MiB"
        args.rounds = args.s3_rounds = args.concurrency_rounds = args.small_rounds = 1
        args.concurrency = "20x1MiB,4x16MiB"
        args.small_seconds = 1.0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts: {', '.join(sorted(unknown))}")
    servers = None if args.servers is None else [s.strip() for s in args.servers.split(",")]
    return Options(
        size=parse_size(args.size),
        s3_size=parse_size(args.s3_size),
        rss_size=parse_size(args.rss_size),
        rounds=args.rounds,
        s3_rounds=args.s3_rounds,
        concurrency=parse_loads(args.concurrency),
        concurrency_rounds=args.concurrency_rounds,
        small_seconds=args.small_seconds,
        small_rounds=args.small_rounds,
        connections=args.connections,
        patch_size=parse_size(args.patch_size),
        file_chunk=parse_size(args.file_chunk),
        s3_chunk=parse_size(args.s3_chunk),
        parts=parts,
        servers=servers,
        flush=args.flush,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = options_from(args)
    out = args.out or REPO / "benchmarks" / "results" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="tusd-bench-"))
        )
        work.mkdir(parents=True, exist_ok=True)
        tools = Tools(repo=REPO, work=work, peers=args.peers_dir)
        tools.install_scripts()
        env = environment(tools)
        run = Run(tools, options)
        with backends(tools, options.parts):
            run.execute()
        env["load_end"] = os.getloadavg()[0]
    results = {
        "environment": env,
        "options": {k: v for k, v in vars(options).items()},
        "skipped": run.skipped,
        "records": run.records,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    markdown = report.render(results)
    (out / "results.md").write_text(markdown)
    plotted = report.plot(results, out / "performance.png", tools.peers_python)
    if args.docs:
        report.update_docs(REPO / "docs" / "performance.md", markdown, plotted)
    print(markdown)
    print(f"results in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
