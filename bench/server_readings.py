"""What ``bench.load_whole`` reads off the server: its processes' CPU and memory from /proc
(summed over uvicorn's workers), each core's busy time, and the checkpoint writes' histogram
from its ``/metrics``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.load_calls import cpu_s, rss_kb  # a process's /proc readings

ADMIN_TOKEN = "dev-admin-token"


def core_times() -> dict[int, tuple[float, float]]:
    """Per core: (busy, total) seconds since boot, from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in values[:8]]
                idle = v[3] + v[4]
                out[int(name[3:])] = ((sum(v) - idle) / tick, sum(v) / tick)
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's workers under ``--workers``)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return found


def tree_sum(pid: int, reading: Callable[[int], float]) -> float:
    """``reading`` (``cpu_s``, ``rss_kb``) summed over ``pid`` and its descendants; a process
    that ended meanwhile counts nothing."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += reading(p)
    return total


def tree_cpu_s(pid: int) -> float:
    return tree_sum(pid, cpu_s)


def tree_rss_kb(pid: int) -> float:
    return tree_sum(pid, rss_kb)


async def checkpoint_writes(http: httpx.AsyncClient) -> dict[str, tuple[int, float, float]]:
    """The server's checkpoint write histogram (``dialgraph_checkpoint_write_seconds``), by op:
    (count, mean ms, the bucket bound in ms that 99 % of writes are under)."""
    r = await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    if r.status_code != 200:
        return {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        if family.name != "dialgraph_checkpoint_write_seconds":
            continue
        for sample in family.samples:
            op = sample.labels.get("op", "")
            if sample.name.endswith("_bucket"):
                buckets.setdefault(op, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                totals[op] = sample.value
    out = {}
    for op, bounds in buckets.items():
        bounds.sort()
        count = bounds[-1][1]
        if count:
            p99 = next(le for le, n in bounds if n >= 0.99 * count)
            out[op] = (int(count), totals.get(op, 0.0) / count * 1000, p99 * 1000)
    return out
