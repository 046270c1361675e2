"""The base-model catalog: tunable models, their adapter sizes, and what to do with unknown ones."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "ADAPTER_SIZES_BY_NUMBER",
    "ALL_ADAPTER_SIZES",
    "DEFAULT_CATALOG",
    "DEFAULT_MODEL_SIZES",
    "ModelCatalog",
    "ModelInfo",
    "UnknownModels",
    "catalog_from_sizes",
]

# The adapter sizes people write (sft.train(adapter_size=4), the docs' tables) and their
# AdapterSize enum names.
ADAPTER_SIZES_BY_NUMBER: Mapping[int, str] = {
    1: "ADAPTER_SIZE_ONE",
    2: "ADAPTER_SIZE_TWO",
    4: "ADAPTER_SIZE_FOUR",
    8: "ADAPTER_SIZE_EIGHT",
    16: "ADAPTER_SIZE_SIXTEEN",
    32: "ADAPTER_SIZE_THIRTY_TWO",
}
ALL_ADAPTER_SIZES: frozenset[str] = frozenset(ADAPTER_SIZES_BY_NUMBER.values())


class UnknownModels(StrEnum):
    """What a catalog answers for a base model it does not list."""

    # Vertex's own behaviour (the emulator's): a model it does not know is refused.
    REFUSE = "refuse"
    # tuningd's default: a model released after this catalog was written is Vertex's to judge,
    # so it is accepted here and Vertex's answer to the create becomes the job's.
    FORWARD = "forward"


@dataclass(frozen=True)
class ModelInfo:
    """What Vertex allows for one tunable base model."""

    name: str
    adapter_sizes: frozenset[str]
    dataset_format: str = "contents"  # "contents" (Gemini) or "messages" (gemini-1.0-pro-002)


@dataclass(frozen=True)
class ModelCatalog:
    """The base-model allow-list used for create-time validation.

    `get` answers None for an unlisted model when `unknown` is REFUSE (validation then refuses
    it), and a ModelInfo allowing every adapter size when it is FORWARD (nothing is checked
    locally; Vertex decides)."""

    models: Mapping[str, ModelInfo]
    unknown: UnknownModels = field(default=UnknownModels.REFUSE)

    def get(self, name: str) -> ModelInfo | None:
        info = self.models.get(name)
        if info is None and self.unknown is UnknownModels.FORWARD:
            return ModelInfo(name, ALL_ADAPTER_SIZES)
        return info

    def knows(self, name: str) -> bool:
        """Whether the model is listed (whatever `unknown` says)."""
        return name in self.models


# Spec §3 lists sizes for 2.x and 3.1; the 1.x, 3.5 and translation entries are assumptions
# (1.x per the 1.x-era docs, 3.5 like 3.1, translation like 1.0). Sizes as numbers, the way the
# configuration writes them ([models] known).
_SIZES_1248 = (1, 2, 4, 8)
_SIZES_1_16 = (1, 2, 4, 8, 16)
DEFAULT_MODEL_SIZES: Mapping[str, tuple[int, ...]] = {
    "gemini-1.0-pro-002": (1, 4, 8, 16),
    "gemini-1.5-pro-002": (1, 4),
    "gemini-1.5-flash-002": (1, 4, 8, 16),
    "gemini-2.0-flash-001": _SIZES_1248,
    "gemini-2.0-flash-lite-001": _SIZES_1248,
    "gemini-2.5-pro": _SIZES_1248,
    "gemini-2.5-flash": _SIZES_1_16,
    "gemini-2.5-flash-lite": _SIZES_1_16,
    "gemini-3.1-flash-lite": _SIZES_1_16,
    "gemini-3.5-flash": _SIZES_1_16,
    "gemini-3.5-flash-lite": _SIZES_1_16,
    "translation-llm-002": (1, 4, 8, 16),
}
# The one model whose datasets use the legacy "messages" format (spec §7).
_MESSAGES_FORMAT_MODELS = frozenset({"gemini-1.0-pro-002"})


def _sizes(numbers: Iterable[int]) -> frozenset[str]:
    # No sizes listed means "not checked locally": every size goes to Vertex.
    names = frozenset(ADAPTER_SIZES_BY_NUMBER[n] for n in numbers)
    return names or ALL_ADAPTER_SIZES


def catalog_from_sizes(sizes: Mapping[str, Iterable[int]], *,
                       unknown: UnknownModels = UnknownModels.REFUSE) -> ModelCatalog:
    """A catalog from model id -> adapter sizes as numbers (1, 2, 4, 8, 16, 32; none = any).

    Raises KeyError for a number that is no adapter size (the configuration checks first)."""
    return ModelCatalog(models={
        name: ModelInfo(name, _sizes(numbers),
                        "messages" if name in _MESSAGES_FORMAT_MODELS else "contents")
        for name, numbers in sizes.items()
    }, unknown=unknown)


DEFAULT_CATALOG: ModelCatalog = catalog_from_sizes(DEFAULT_MODEL_SIZES)
