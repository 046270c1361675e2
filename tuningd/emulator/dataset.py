"""Tuning dataset JSONL checks (spec §7) and the tuningDataStats they produce, real or synthetic."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTENTS_FORMAT = "contents"
MESSAGES_FORMAT = "messages"
LEGACY_MODEL = "gemini-1.0-pro-002"

# gemini-1.0-pro-002 docs: >= 16 training examples, <= 256 validation examples (spec §6).
MIN_TRAINING_EXAMPLES: Mapping[str, int] = {CONTENTS_FORMAT: 1, MESSAGES_FORMAT: 16}
MAX_VALIDATION_EXAMPLES: Mapping[str, int] = {CONTENTS_FORMAT: 5000, MESSAGES_FORMAT: 256}
# Vertex does not document its batch size; only the step count's order of magnitude matters.
BATCH_SIZE = 16
TOKEN_LIMIT_REASON = "Example exceeds the maximum token limit."  # noqa: S105
_PART_KINDS = frozenset({
    "text", "fileData", "file_data", "inlineData", "inline_data", "functionCall",
    "function_call", "functionResponse", "function_response", "executableCode",
    "executable_code", "codeExecutionResult", "code_execution_result",
})
_MAX_SAMPLE_CONTENTS = 10


class DatasetError(Exception):
    """The dataset cannot be used; the message is what the failed job's error says."""


@dataclass(frozen=True)
class Example:
    """What the stats need from one valid example."""

    input_chars: int
    output_chars: int
    message_count: int
    contents: tuple[Mapping[str, Any], ...]  # Gemini Content objects, for userDatasetExamples

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.input_chars) + estimate_tokens(self.output_chars)


@dataclass(frozen=True)
class DatasetSummary:
    """The valid examples of one file, in file order, with their 1-based line numbers."""

    examples: tuple[Example, ...]
    line_numbers: tuple[int, ...]


def estimate_tokens(chars: int) -> int:
    """Vertex bills roughly one token per four characters of text."""
    return math.ceil(chars / 4)


def resolve_gcs_uri(gcs_root: Path, uri: str) -> Path:
    """gs://bucket/path -> gcs_root/bucket/path, refusing anything that escapes the root."""
    if not uri.startswith("gs://"):
        raise DatasetError(f"Dataset {uri} is not a Cloud Storage URI.")
    relative = uri[len("gs://"):]
    root = gcs_root.resolve()
    path = (root / relative).resolve()
    if not relative or not path.is_relative_to(root):
        raise DatasetError(f"Invalid Cloud Storage URI: {uri}.")
    return path


def read_lines(gcs_root: Path, uri: str) -> list[str]:
    path = resolve_gcs_uri(gcs_root, uri)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"Dataset file {uri} does not exist or is not accessible.") from None
    except (IsADirectoryError, PermissionError):
        raise DatasetError(f"Dataset file {uri} does not exist or is not accessible.") from None
    except UnicodeDecodeError:
        raise DatasetError(f"Dataset file {uri} is not valid UTF-8 text.") from None


def check_lines(lines: Iterable[str], *, dataset_format: str, uri: str) -> DatasetSummary:
    """Validate every non-blank line; the first bad line raises DatasetError naming it."""
    examples: list[Example] = []
    numbers: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _line_error(uri, number, f"invalid JSON ({exc.msg})") from None
        try:
            if not isinstance(record, dict):
                raise ValueError("each line must be a JSON object")
            if dataset_format == MESSAGES_FORMAT:
                example = _check_messages(record)
            else:
                example = _check_contents(record)
        except ValueError as exc:
            raise _line_error(uri, number, str(exc)) from None
        examples.append(example)
        numbers.append(number)
    return DatasetSummary(tuple(examples), tuple(numbers))


def _line_error(uri: str, number: int, reason: str) -> DatasetError:
    return DatasetError(f"Invalid dataset {uri}: line {number}: {reason}.")


def _check_contents(record: Mapping[str, Any]) -> Example:
    if "contents" not in record and "messages" in record:
        raise ValueError(
            f'the legacy "messages" format is only supported for {LEGACY_MODEL}; '
            'use "contents"'
        )
    contents = record.get("contents")
    if not isinstance(contents, list) or not contents:
        raise ValueError('"contents" is required and must be a non-empty list')
    input_chars = 0
    system = record.get("systemInstruction", record.get("system_instruction"))
    if system is not None:
        if not isinstance(system, dict):
            raise ValueError("systemInstruction must be an object")
        input_chars += _parts_chars(system.get("parts"), "systemInstruction")
    output_chars = 0
    previous = ""
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        if not isinstance(content, dict):
            raise ValueError(f"{where} must be an object")
        role = content.get("role")
        if role not in ("user", "model"):
            raise ValueError(f"{where}.role must be 'user' or 'model'")
        if i == 0 and role != "user":
            raise ValueError("contents[0].role must be 'user'")
        if role == previous:
            raise ValueError(f"{where}.role must alternate between 'user' and 'model'")
        previous = role
        chars = _parts_chars(content.get("parts"), where)
        if role == "user":
            input_chars += chars
        else:
            output_chars += chars
    if previous != "model":
        raise ValueError("the last turn of contents must have role 'model'")
    return Example(input_chars, output_chars, len(contents),
                   tuple(c for c in contents[:_MAX_SAMPLE_CONTENTS]))


def _parts_chars(parts: Any, where: str) -> int:
    if not isinstance(parts, list) or not parts:
        raise ValueError(f"{where}.parts must be a non-empty list")
    total = 0
    for j, part in enumerate(parts):
        at = f"{where}.parts[{j}]"
        if not isinstance(part, dict):
            raise ValueError(f"{at} must be an object")
        kinds = [k for k in part if k in _PART_KINDS]
        if len(kinds) != 1:
            raise ValueError(f"{at} must hold exactly one of text, fileData, functionCall, "
                             "functionResponse, ...")
        kind = kinds[0]
        value = part[kind]
        if kind == "text":
            if not isinstance(value, str):
                raise ValueError(f"{at}.text must be a string")
            total += len(value)
        elif kind in ("fileData", "file_data"):
            _check_file_data(value, at)
        else:
            # Structured parts count as their JSON text, which is roughly what gets tokenized.
            total += len(json.dumps(value, separators=(",", ":")))
    return total


def _check_file_data(value: Any, at: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{at}.fileData must be an object")
    uri = value.get("fileUri", value.get("file_uri"))
    mime = value.get("mimeType", value.get("mime_type"))
    if not isinstance(uri, str) or not uri.startswith(("gs://", "http://", "https://")):
        raise ValueError(f"{at}.fileData.fileUri must be a gs:// or http(s) URI")
    if not isinstance(mime, str) or "/" not in mime:
        raise ValueError(f"{at}.fileData.mimeType is required")


def _check_messages(record: Mapping[str, Any]) -> Example:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" is required and must be a non-empty list')
    input_chars = output_chars = 0
    previous = ""
    contents: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ValueError(f"{where} must be an object")
        role = message.get("role")
        text = message.get("content")
        if role not in ("system", "user", "model"):
            raise ValueError(f"{where}.role must be 'system', 'user' or 'model'")
        if not isinstance(text, str):
            raise ValueError(f"{where}.content must be a string")
        if role == "system":
            if i != 0:
                raise ValueError(f"{where}: a 'system' message may only come first")
            input_chars += len(text)
            continue
        if previous == "" and role != "user":
            raise ValueError(f"{where}.role must be 'user' (the first turn)")
        if role == previous:
            raise ValueError(f"{where}.role must alternate between 'user' and 'model'")
        previous = role
        if role == "user":
            input_chars += len(text)
        else:
            output_chars += len(text)
        contents.append({"role": role, "parts": [{"text": text}]})
    if previous != "model":
        raise ValueError("the last message must have role 'model'")
    return Example(input_chars, output_chars, len(contents),
                   tuple(contents[:_MAX_SAMPLE_CONTENTS]))


def check_training(summary: DatasetSummary, *, dataset_format: str, uri: str) -> None:
    minimum = MIN_TRAINING_EXAMPLES.get(dataset_format, 1)
    if len(summary.examples) < minimum:
        raise DatasetError(
            f"Invalid dataset {uri}: it has {len(summary.examples)} examples; at least "
            f"{minimum} are required."
        )


def check_validation(summary: DatasetSummary, *, dataset_format: str, uri: str,
                     training_count: int) -> None:
    maximum = MAX_VALIDATION_EXAMPLES.get(dataset_format, 5000)
    count = len(summary.examples)
    if count > maximum:
        raise DatasetError(f"Invalid validation dataset {uri}: it has {count} examples; at most "
                           f"{maximum} are allowed.")
    # Gemini rule: more than 1000 validation examples may not exceed 30% of training.
    if dataset_format == CONTENTS_FORMAT and count > 1000 and count > 0.3 * training_count:
        raise DatasetError(f"Invalid validation dataset {uri}: {count} examples exceed 30% of "
                           f"the {training_count} training examples.")


def synthetic_summary(seed: str) -> DatasetSummary:
    """Plausible examples for datasets the emulator cannot read (no gcs_root, dataset resources)."""
    rng = random.Random(seed)
    count = rng.randint(120, 600)
    examples = []
    for _ in range(count):
        input_chars = rng.randint(80, 2400)
        output_chars = rng.randint(8, 600)
        examples.append(Example(input_chars, output_chars, 2, (
            {"role": "user", "parts": [{"text": "Classify the sentiment of this review."}]},
            {"role": "model", "parts": [{"text": "positive"}]},
        )))
    return DatasetSummary(tuple(examples), tuple(range(1, count + 1)))


def auto_epochs(example_count: int) -> int:
    """The epoch count Vertex picks when none is given: more epochs for smaller datasets."""
    return min(40, max(3, math.ceil(6000 / max(example_count, 1))))


def tuning_data_stats(summary: DatasetSummary, *, epochs: int,
                      max_example_tokens: int) -> dict[str, Any]:
    """supervisedTuningDataStats in canonical form (ints for int64, zero/empty fields absent)."""
    kept = [e for e in summary.examples if e.tokens <= max_example_tokens]
    dropped = [n for e, n in zip(summary.examples, summary.line_numbers, strict=True)
               if e.tokens > max_example_tokens]
    total_chars = sum(e.input_chars + e.output_chars for e in kept)
    billable_chars = total_chars * epochs
    steps = epochs * math.ceil(len(kept) / BATCH_SIZE)
    stats: dict[str, Any] = {
        "tuningDatasetExampleCount": len(kept),
        "totalTuningCharacterCount": total_chars,
        "totalBillableCharacterCount": billable_chars,
        "totalBillableTokenCount": estimate_tokens(billable_chars),
        "tuningStepCount": steps,
        "totalTruncatedExampleCount": len(dropped),
        "truncatedExampleIndices": dropped,
        "droppedExampleReasons": [TOKEN_LIMIT_REASON] * len(dropped),
        "userInputTokenDistribution": _distribution(
            [estimate_tokens(e.input_chars) for e in kept], billable=True),
        "userOutputTokenDistribution": _distribution(
            [estimate_tokens(e.output_chars) for e in kept], billable=True),
        "userMessagePerExampleDistribution": _distribution(
            [e.message_count for e in kept], billable=False),
        "userDatasetExamples": [dict(c) for c in kept[0].contents] if kept else [],
    }
    return {"supervisedTuningDataStats": _prune(stats)}


def _distribution(values: list[int], *, billable: bool) -> dict[str, Any]:
    if not values:
        return {}
    ordered = sorted(values)
    total = sum(ordered)
    result: dict[str, Any] = {
        "sum": total,
        "min": float(ordered[0]),
        "max": float(ordered[-1]),
        "mean": total / len(ordered),
        "median": _percentile(ordered, 50),
        "p5": _percentile(ordered, 5),
        "p95": _percentile(ordered, 95),
        "buckets": _buckets(ordered),
    }
    if billable:
        result["billableSum"] = total
    return result


def _percentile(ordered: list[int], pct: float) -> float:
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def _buckets(ordered: list[int], count: int = 5) -> list[dict[str, float]]:
    low, high = ordered[0], ordered[-1]
    if low == high:
        return [{"count": float(len(ordered)), "left": float(low), "right": float(high)}]
    width = (high - low) / count
    counts = [0] * count
    for value in ordered:
        counts[min(count - 1, int((value - low) / width))] += 1
    return [{"count": float(c), "left": low + i * width, "right": low + (i + 1) * width}
            for i, c in enumerate(counts)]


def _prune(value: Any) -> Any:
    """Drop proto3 default values (0, empty) so the canonical form has only set fields."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (0, 0.0, "", [], {}, None)}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value
