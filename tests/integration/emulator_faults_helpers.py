"""Shared pieces of the emulator fault tests: request helpers over real loopback HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp

from tuningd.emulator import Emulator

PROJECT = "my-proj"
LOCATION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
COLLECTION = f"/v1/{PARENT}/tuningJobs"


def job_body(tag: str = "", **extra: Any) -> dict[str, Any]:
    """A valid create body; a tag becomes the label tuningd-job-id=<tag>."""
    body: dict[str, Any] = {
        "baseModel": "gemini-2.5-flash",
        "supervisedTuningSpec": {"trainingDatasetUri": "gs://my-bucket/train.jsonl"},
    }
    if tag:
        body["labels"] = {"tuningd-job-id": tag}
    body.update(extra)
    return body


async def set_faults(http: aiohttp.ClientSession, emu: Emulator, **faults: Any) -> dict[str, Any]:
    """Replace the runtime faults through the admin endpoint (no arguments clears them)."""
    async with http.post(f"{emu.url}/emulator/faults", json=faults) as resp:
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result


async def call(http: aiohttp.ClientSession, emu: Emulator, method: str, path: str,
               body: Any = None, **kwargs: Any) -> tuple[int, Any]:
    """One API call; (status, parsed JSON body)."""
    async with http.request(method, emu.url + path, json=body, **kwargs) as resp:
        return resp.status, await resp.json()


async def listed(http: aiohttp.ClientSession, emu: Emulator, query: str = "",
                 version: str = "v1") -> list[dict[str, Any]]:
    """Every job a (possibly filtered) list shows, following all pages."""
    jobs: list[dict[str, Any]] = []
    token = ""
    while True:
        params = {"filter": query} if query else {}
        if token:
            params["pageToken"] = token
        async with http.get(f"{emu.url}/{version}/{PARENT}/tuningJobs", params=params) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        jobs.extend(page.get("tuningJobs", []))
        token = page.get("nextPageToken", "")
        if not token:
            return jobs


def counts(emu: Emulator, method: str) -> dict[str, int]:
    return dict(emu.state.request_counts.get(method, {}))
