"""The emulator's v1beta1 tuning tools: reward validation (`:validateReinforcementTuningReward`)
and the prompt optimizer (`:optimizePrompt`), as deterministic functions of the request."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from tuningd.core.errors import Code, InvalidArgument

# MatchOperation by enum number (clients asking for int enums may send them so).
_MATCH_OPERATIONS = ("MATCH_OPERATION_UNSPECIFIED", "REGEX_CONTAINS", "PARTIAL_MATCH",
                     "EXACT_MATCH")
_PARSE_TYPES = ("RESPONSE_PARSE_TYPE_UNSPECIFIED", "IDENTITY", "REGEX_EXTRACT")
# Scorers Vertex runs elsewhere (a sandbox, a Cloud Run service, a model): not emulated.
_REMOTE_SCORERS = ("codeExecutionRewardScorer", "cloudRunRewardScorer", "autoraterScorer")
_REFERENCE = re.compile(r"\{\{\s*references\.([A-Za-z0-9_.-]+)\s*\}\}")
_FEW_SHOT_TARGETS = ("OPTIMIZATION_TARGET_FEW_SHOT_RUBRICS",
                     "OPTIMIZATION_TARGET_FEW_SHOT_TARGET_RESPONSE")
_OPTIMIZE_ADVICE = ("State the task and the expected output format explicitly, give the model "
                    "the context it needs, and ask it to reason step by step before answering.")
_CHUNK_CHARS = 80


def _get(obj: Mapping[str, Any], camel: str) -> Any:
    """A field by its JSON name or its proto (snake_case) name."""
    if camel in obj:
        return obj[camel]
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
    return obj.get(snake)


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"Invalid value at '{field}': expected an object.")
    return value


def _text(content: Any, field: str) -> str:
    """The text parts of a Content, joined."""
    parts = _get(_object(content, field), "parts") or []
    if not isinstance(parts, list):
        raise InvalidArgument(f"Invalid value at '{field}.parts': expected a list.")
    return "".join(str(_get(_object(p, f"{field}.parts"), "text") or "") for p in parts)


def _enum_name(value: Any, names: tuple[str, ...], field: str) -> str:
    if value is None:
        return names[0]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    if isinstance(value, str) and value in names:
        return value
    raise InvalidArgument(f"Invalid value at '{field}' ({value!r}).")


def _regex(expression: str, field: str) -> re.Pattern[str]:
    try:
        return re.compile(expression, re.DOTALL)
    except re.error as exc:
        raise InvalidArgument(f"Invalid regular expression at '{field}': {exc}.") from None


# --------------------------------------------------------------------------------------------
# :validateReinforcementTuningReward


def validate_reward(body: Any) -> dict[str, Any]:
    """The ValidateReinforcementTuningRewardResponse for a request body (400 on a bad one)."""
    request = _object(body, "request")
    response_text = _text(_get(request, "sampleResponse"), "sample_response")
    example = _object(_get(request, "example"), "example")
    references = _object(_get(example, "references"), "example.references")
    single = _get(request, "singleRewardConfig")
    composite = _get(request, "compositeRewardConfig")
    if (single is None) == (composite is None):
        raise InvalidArgument("Exactly one of single_reward_config and composite_reward_config "
                              "must be set.")
    weighted: list[tuple[float, dict[str, Any], str]] = []
    if single is not None:
        weighted.append((1.0, _object(single, "single_reward_config"), "single_reward_config"))
    else:
        items = _get(_object(composite, "composite_reward_config"), "weightedRewardConfigs")
        if not isinstance(items, list) or not items:
            raise InvalidArgument("composite_reward_config.weighted_reward_configs must not be "
                                  "empty.")
        for i, item in enumerate(items):
            at = f"composite_reward_config.weighted_reward_configs[{i}]"
            entry = _object(item, at)
            weight = _get(entry, "weight")
            weight = 1.0 if weight is None else weight
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
                raise InvalidArgument(f"Invalid value at '{at}.weight': a non-negative number.")
            weighted.append((float(weight), _object(_get(entry, "rewardConfig"),
                                                    f"{at}.reward_config"), f"{at}.reward_config"))
    details: dict[str, Any] = {}
    total = weights = 0.0
    errors = []
    for index, (weight, config, at) in enumerate(weighted):
        name = str(_get(config, "rewardName") or f"reward_{index}")
        if name in details:
            raise InvalidArgument(f"Duplicate reward_name {name!r}.")
        info = _score(config, at, response_text, references)
        details[name] = info
        if "reward" in info:
            total += weight * info["reward"]
            weights += weight
        else:
            errors.append(f"{name}: {info['errorStatus']['message']}")
    answer: dict[str, Any] = {"rewardInfoDetails": details}
    if weights > 0:
        answer["overallReward"] = total / weights
    if errors:
        answer["error"] = "; ".join(errors)
    return answer


def _score(config: Mapping[str, Any], at: str, response_text: str,
           references: Mapping[str, Any]) -> dict[str, Any]:
    parsed = _parse_response(_object(_get(config, "parseResponseConfig"),
                                     f"{at}.parse_response_config"), response_text, at)
    string_match = _get(config, "stringMatchRewardScorer")
    if string_match is not None:
        scorer = _object(string_match, f"{at}.string_match_reward_scorer")
        matched = _string_match(scorer, f"{at}.string_match_reward_scorer", parsed, references)
        key = "correctAnswerReward" if matched else "wrongAnswerReward"
        value = _get(scorer, key)
        default = 1.0 if matched else 0.0
        return {"reward": float(value) if isinstance(value, int | float) else default}
    for scorer_name in _REMOTE_SCORERS:
        if _get(config, scorer_name) is not None:
            return {"errorStatus": {"code": int(Code.UNIMPLEMENTED),
                                    "message": f"The emulator does not run {scorer_name} "
                                               "reward scorers."}}
    raise InvalidArgument(f"{at}: one reward scorer must be set.")


def _parse_response(config: Mapping[str, Any], text: str, at: str) -> str:
    kind = _enum_name(_get(config, "parseType"), _PARSE_TYPES,
                      f"{at}.parse_response_config.parse_type")
    if kind != "REGEX_EXTRACT":
        return text
    expression = str(_get(config, "regexExtractExpression") or "")
    matches = list(_regex(expression, f"{at}.parse_response_config").finditer(text))
    if not matches:
        return ""
    last = matches[-1]  # unlike GoogleSQL's REGEXP_EXTRACT, the last match wins
    return last.group(1) if last.re.groups else last.group(0)


def _string_match(scorer: Mapping[str, Any], at: str, parsed: str,
                  references: Mapping[str, Any]) -> bool:
    expression = _get(scorer, "stringMatchExpression")
    target = parsed
    if expression is None:
        json_match = _object(_get(scorer, "jsonMatchExpression"), f"{at}.json_match_expression")
        if not json_match:
            raise InvalidArgument(f"{at}: string_match_expression or json_match_expression is "
                                  "required.")
        try:
            value = json.loads(parsed)
        except ValueError:
            return False
        key = str(_get(json_match, "keyName") or "")
        if not isinstance(value, dict) or key not in value:
            return False
        found = value[key]
        target = found if isinstance(found, str) else json.dumps(found)
        expression = _get(json_match, "valueStringMatchExpression")
        at = f"{at}.json_match_expression.value_string_match_expression"
    else:
        at = f"{at}.string_match_expression"
    spec = _object(expression, at)
    operation = _enum_name(_get(spec, "matchOperation"), _MATCH_OPERATIONS,
                           f"{at}.match_operation")
    if operation == "MATCH_OPERATION_UNSPECIFIED":
        raise InvalidArgument(f"{at}.match_operation must be set.")
    wanted = _REFERENCE.sub(lambda m: str(references.get(m.group(1), "")),
                            str(_get(spec, "expression") or ""))
    if operation == "EXACT_MATCH":
        return target == wanted
    if operation == "PARTIAL_MATCH":
        return wanted in target
    return _regex(wanted, at).search(target) is not None


# --------------------------------------------------------------------------------------------
# :optimizePrompt


def optimize_prompt(body: Any) -> list[dict[str, Any]]:
    """The streamed OptimizePromptResponse chunks (a JSON array over REST) for a request: their
    texts, joined, are a ```json block the SDK parses into its ParsedResponse types."""
    request = _object(body, "request")
    prompt = _text(_get(request, "content"), "content").strip()
    if not prompt:
        raise InvalidArgument("content must contain a text part with the prompt to optimize.")
    target = _get(request, "optimizationTarget")
    suggested = f"{prompt}\n\n{_OPTIMIZE_ADVICE}"
    guideline = {"applicable_guideline": "Be explicit about the task and the output format.",
                 "suggested_improvement": _OPTIMIZE_ADVICE,
                 "text_before_change": prompt, "text_after_change": suggested}
    parsed: dict[str, Any]
    if target in _FEW_SHOT_TARGETS:
        parsed = {"suggested_modifications": [guideline],
                  "original_system_instructions": prompt, "new_system_instructions": suggested}
    else:
        parsed = {"optimization_type": "zero_shot", "applicable_guidelines": [guideline],
                  "original_prompt": prompt, "suggested_prompt": suggested}
    text = "```json\n" + json.dumps(parsed, indent=2) + "\n```"
    chunks = [text[i:i + _CHUNK_CHARS] for i in range(0, len(text), _CHUNK_CHARS)]
    return [{"content": {"role": "model", "parts": [{"text": chunk}]}} for chunk in chunks]
