"""tus through tusd-py into S3 beside direct presigned parts into S3: the measured answer to
"do I need a tus server if I use S3 multipart?" (docs/direct-s3.md).

One run, on moto's S3 server over HTTP and one tusd-py process with --s3-direct (local state):
the same file is uploaded by tus-js-client (one PATCH, its default) through tusd-py, and the way
@uppy/aws-s3 does it with companionEndpoint: create, then per part a signature from tusd-py and a
PUT straight to moto (`--concurrency` parts at once, Uppy's default is 6), then complete. For
each: wall time, the server's CPU seconds (/proc), bytes through the server, requests to the
server, S3 requests by the server (its metrics) and by the client. Both objects are checked by
SHA-256. Prints a markdown table.

    python -m benchmarks.direct_vs_tus [--size 256MiB] [--part-size 8MiB] [--concurrency 6]

Needs node and tests/e2e/js/node_modules (tus-js-client; `bash scripts/test` installs them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.procs import Server, run_json, start_server
from tusd_py.config import parse_size

REPO = Path(__file__).resolve().parents[1]
NODE_MODULES = REPO / "tests/e2e/js/node_modules"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
GIB = 1024**3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **CREDENTIALS},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def s3_client(endpoint: str) -> Any:
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )


def server_counts(server: Server) -> dict[str, float]:
    """Requests answered, body bytes received, S3 requests sent: the server's own metrics."""
    base = server.endpoint.removesuffix("/files/")
    text = httpx.get(base + "/metrics", timeout=30).text
    counts = {"requests": 0.0, "bytes_received": 0.0, "s3_requests": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tusd_requests_total":
                counts["requests"] += sample.value
            elif sample.name == "tusd_bytes_received_total":
                counts["bytes_received"] += sample.value
            elif sample.name == "tusd_s3_request_duration_seconds_count":
                counts["s3_requests"] += sample.value
    return counts


def tus_upload(server: Server, path: Path, work: Path) -> dict[str, Any]:
    client_dir = work / "client"
    client_dir.mkdir(exist_ok=True)
    shutil.copy(REPO / "benchmarks/peers/client.mjs", client_dir / "client.mjs")
    with contextlib.suppress(FileExistsError):
        (client_dir / "node_modules").symlink_to(NODE_MODULES)
    result = run_json(
        ["node", str(client_dir / "client.mjs"), server.endpoint, str(path), "Infinity"]
    )
    if not result.get("ok"):
        raise RuntimeError(f"tus-js-client failed: {result}")
    return {"seconds": result["seconds"], "key": str(result["url"]).rsplit("/", 1)[1],
            "client_s3_requests": 0, "client_bytes_to_server": None}  # fmt: skip


async def direct_upload(
    server: Server, path: Path, part_size: int, concurrency: int
) -> dict[str, Any]:
    routes = server.endpoint + "s3/multipart"
    size = path.stat().st_size  # noqa: ASYNC240 - before the clock starts
    count = max(1, -(-size // part_size))
    through = 0  # request and response bodies exchanged with tusd-py

    async with httpx.AsyncClient(timeout=120) as http:

        async def to_server(method: str, url: str, **options: Any) -> Any:
            nonlocal through
            response = await http.request(method, url, **options)
            response.raise_for_status()
            through += len(response.request.content) + len(response.content)
            return response.json()

        started = time.perf_counter()
        created = await to_server(
            "POST", routes, json={"filename": "bench.bin", "type": "application/octet-stream",
                                  "metadata": {"name": "bench.bin"}},
        )  # fmt: skip
        upload_id, key = created["uploadId"], created["key"]
        slots = asyncio.Semaphore(concurrency)
        etags: dict[int, str] = {}

        async def part(number: int, f: Any) -> None:
            async with slots:
                signed = await to_server(
                    "GET", f"{routes}/{upload_id}/{number}", params={"key": key}
                )
                f.seek((number - 1) * part_size)
                body = f.read(part_size)
                response = await http.put(signed["url"], content=body)
                response.raise_for_status()
                etags[number] = response.headers["ETag"]

        with open(path, "rb") as f:  # noqa: ASYNC230 - page-cache reads, as in s3_direct.py
            await asyncio.gather(*(part(n, f) for n in range(1, count + 1)))
        parts = [{"PartNumber": n, "ETag": etags[n]} for n in range(1, count + 1)]
        await to_server("POST", f"{routes}/{upload_id}/complete", params={"key": key},
                        json={"parts": parts})  # fmt: skip
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "key": key, "client_s3_requests": count,
            "client_bytes_to_server": through}  # fmt: skip


def measure(server: Server, run: Any) -> dict[str, Any]:
    before, cpu = server_counts(server), server.cpu_seconds()
    result: dict[str, Any] = run()
    result["cpu"] = server.cpu_seconds() - cpu
    after = server_counts(server)
    result.update({k: after[k] - before[k] for k in before})
    return result


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def table(results: dict[str, dict[str, Any]], size: int) -> str:
    gib = size / GIB
    rows = [
        "| | tus through tusd-py | direct presigned parts |",
        "| --- | --- | --- |",
    ]

    def row(label: str, fmt: Any) -> None:
        rows.append(f"| {label} | {fmt(results['tus'])} | {fmt(results['direct'])} |")

    row("seconds", lambda r: f"{r['seconds']:.1f}")
    row("throughput", lambda r: f"{size / r['seconds'] / 2**20:.0f} MiB/s")
    row("server CPU seconds per GiB", lambda r: f"{r['cpu'] / gib:.2f}")
    row(
        "bytes through the server per GiB",
        lambda r: _bytes((r["client_bytes_to_server"] or r["bytes_received"]) / gib),
    )
    row("requests to the server", lambda r: f"{r['requests']:.0f}")
    row("S3 requests by the server", lambda r: f"{r['s3_requests']:.0f}")
    row("S3 requests by the client", lambda r: f"{r['client_s3_requests']}")
    return "\n".join(rows)


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 2**20), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256MiB", type=parse_size)
    parser.add_argument("--part-size", default="8MiB", type=parse_size)
    parser.add_argument("--concurrency", default=6, type=int)
    args = parser.parse_args(argv)
    os.environ.update(CREDENTIALS)
    with tempfile.TemporaryDirectory(prefix="direct-vs-tus-") as tmp, moto() as endpoint:
        work = Path(tmp)
        source = work / "source.bin"
        with open(source, "wb") as f:
            for _ in range(-(-args.size // 2**20)):
                f.write(os.urandom(2**20))
            f.truncate(args.size)
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket="bench")
        server = start_server(
            "tusd-py",
            [sys.executable, "-m", "tusd_py", "--port", "0", "--upload-dir", str(work / "data"),
             "--s3-bucket", "bench", "--s3-endpoint", endpoint, "--s3-region", "us-east-1",
             "--s3-part-size", str(args.part_size), "--s3-direct"],
        )  # fmt: skip
        try:
            results = {
                "tus": measure(server, lambda: tus_upload(server, source, work)),
                "direct": measure(
                    server,
                    lambda: asyncio.run(
                        direct_upload(server, source, args.part_size, args.concurrency)
                    ),
                ),
            }
        finally:
            server.stop()
        expected = sha256(source)
        for name, result in results.items():
            body = s3.get_object(Bucket="bench", Key=result["key"])["Body"].read()
            if hashlib.sha256(body).hexdigest() != expected:
                print(f"{name}: the object in S3 is not the file", file=sys.stderr)
                return 1
        load = os.getloadavg()[0]
        print(
            f"load average {load:.1f} at the end; "
            f"{args.size / 2**20:.0f} MiB, parts of {args.part_size / 2**20:.0f} MiB, "
            f"{args.concurrency} direct parts in flight, moto over HTTP on "
            f"{os.cpu_count()} cores; both objects' SHA-256 checked\n"
        )
        print(table(results, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
