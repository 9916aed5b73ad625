"""A smoke run of benchmarks/run's driver: tiny sizes, one round, tusd-py and the limits only.

It checks that the command still produces its tables and that tusd-py passes through every part
without an error, not how fast anything is (the real run is `benchmarks/run`, docs/performance.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks import direct_vs_tus, driver, report, s3_patch_cpu
from benchmarks.nginx_limit import nginx_binary


def run_driver(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """The driver with `args`, small requests for 0.3 s in one round, no docs written: its
    results (none failed) and its markdown."""
    out = tmp_path / "results"
    status = driver.main(
        [
            *args,
            "--small-seconds", "0.3",
            "--small-rounds", "1",
            "--work-dir", str(tmp_path / "work"),
            "--out", str(out),
            "--no-docs",
        ]
    )  # fmt: skip
    assert status == 0
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    failed = [r for r in results["records"] if not r.get("ok", True)]
    assert not failed, failed
    return results, (out / "results.md").read_text()


def test_the_benchmark_driver_produces_its_tables(tmp_path: Path) -> None:
    for tool in ("node", "curl"):
        assert shutil.which(tool), f"{tool} is not on PATH; `bash scripts/test` installs it"
    assert nginx_binary(), "nginx is not installed; `bash scripts/test` installs it"
    results, table = run_driver(
        tmp_path,
        "--parts", "file,s3,concurrency,small",
        "--servers", "tusd-py,tusd-py-w2,sink,nginx,tusd-py-s3,tusd-py-redis",
        "--size", "2MiB",
        "--s3-size", "6MiB",
        "--rounds", "1",
        "--s3-rounds", "1",
        "--concurrency", "4x256KiB",
        "--concurrency-rounds", "1",
    )  # fmt: skip
    parts = {r["part"] for r in results["records"]}
    assert parts == {"file", "s3", "concurrency", "small"}
    small = [r for r in results["records"] if r["part"] == "small"]
    want = "wrk" if shutil.which("wrk") else "load.mjs"
    assert {r["generator"] for r in small} == {want}, small
    assert any(
        r["part"] == "concurrency" and r["server"] == "tusd-py-w2" for r in results["records"]
    )
    for heading in (
        "### The bar",
        "### File store",
        "### S3 (moto)",
        "### Many uploads at once",
        "### Small requests",
        "### Peak RSS",
    ):
        assert heading in table
    assert "| curl, one PATCH |" in table
    nginx = [r for r in results["records"] if r["server"] == "nginx"]
    assert nginx and {r["client"] for r in nginx} == {"curl, one PATCH"}, nginx


def test_the_redis_shapes_part_measures_every_shape(tmp_path: Path) -> None:
    """The redis-shapes part starts its Sentinel group and Cluster, runs HEAD and PATCH against
    tusd-py on each shape without an error, and its table gives each a ratio to one
    redis-server."""
    assert shutil.which("node"), "node is not on PATH; `bash scripts/test` installs it"
    results, markdown = run_driver(tmp_path, "--parts", "redis-shapes")
    assert not results["skipped"], results["skipped"]
    measured = {(r["server"], r["client"]) for r in results["records"]}
    assert measured == {(s, c) for s in driver.REDIS_SHAPES for c in ("HEAD", "PATCH 64 KiB")}
    table = markdown.split("### Redis shapes", 1)[1]
    for label in report.REDIS_SHAPE_LABELS.values():
        assert f"| {label} |" in table, table
    assert "| one redis-server | " in table and " | 1.00x | " in table, table


def test_the_direct_vs_tus_comparison_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/direct_vs_tus.py on a tiny file: both paths upload it right (SHA-256) and the
    table comes out; figures are not judged here (docs/direct-s3.md has a real run's)."""
    assert shutil.which("node"), "node is not on PATH; `bash scripts/test` installs it"
    assert direct_vs_tus.main(["--size", "11MiB", "--part-size", "5MiB"]) == 0
    out = capsys.readouterr().out
    assert "| requests to the server | 2 | 5 |" in out, out


def test_the_s3_patch_cpu_measurement_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/s3_patch_cpu.py with 3 PATCHes of 3 MiB (the third fills a part begun by the
    others, so a part upload goes on in the background): one JSON line per run."""
    assert s3_patch_cpu.main(["--patches", "3", "--patch-size", "3MiB", "--runs", "1"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["cpu"] > 0 and line["wall"] > 0, line
