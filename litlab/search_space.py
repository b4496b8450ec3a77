"""The search space of `litlab tune`: a YAML file mapping the CLI's own keys to ranges or choices, read into Optuna
distributions and checked against the experiment's schema before any trial runs.

    model.optimizer.lr: {low: 3.0e-4, high: 1.0e-2, log: true}    # a float range (log-uniform)
    model.init_args.layers: {low: 1, high: 3}                    # integers when both ends are
    data.batch_size: [64, 128, 256]                              # choices (also {choices: [...]})

A sampled set of values becomes plain `--key=value` overrides of the trial's `litlab fit` (`overrides`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import yaml
from jsonargparse import ArgumentError, ArgumentParser
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from litlab.config_errors import explain
from litlab.errors import LitlabError, first_line


def distribution(spec: Any) -> BaseDistribution:
    """One entry of the search space file as an Optuna distribution (lists and mappings among the choices are kept
    as their JSON text, which Optuna can store and the CLI parses back)."""
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict) or not spec:
        raise ValueError("give {low, high} (with log or step) or {choices: [...]}")
    if "choices" in spec:
        extra, choices = set(spec) - {"choices"}, spec["choices"]
        if extra or not isinstance(choices, list) or not choices:
            raise ValueError("choices is a non-empty list and stands alone")
        return CategoricalDistribution([json.dumps(c) if isinstance(c, list | dict) else c for c in choices])
    if set(spec) - {"low", "high", "log", "step"} or not {"low", "high"} <= set(spec):
        raise ValueError(f"unknown fields {sorted(set(spec) - {'low', 'high', 'log', 'step'})} or no low/high")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in (low, high)):
        raise ValueError("low and high are numbers")
    if isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int)):
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(float(low), float(high), log=log, step=step)


def read_space(path: str) -> dict[str, BaseDistribution]:
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise LitlabError(f"--search={path}: cannot read it: {first_line(err, 300)}") from None
    if not isinstance(raw, dict) or not raw:
        raise LitlabError(f"--search={path}: the search space is empty (give `<key>: {{low, high}}` or choices)")
    space = {}
    for key, spec in raw.items():
        try:
            space[str(key).removeprefix("--")] = distribution(spec)
        except ValueError as err:
            raise LitlabError(f"--search={path}: `{key}`: {err}") from None
    return space


def suggest(trial: optuna.Trial, key: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


def candidates(dist: BaseDistribution) -> list:
    """The values checked against the schema before the study starts: every choice, or both ends of a range."""
    return list(dist.choices) if isinstance(dist, CategoricalDistribution) else [dist.low, dist.high]


def cli_value(value: Any) -> str:
    """A parameter as the CLI parses it: strings as they are, the rest as JSON (YAML's subset)."""
    return value if isinstance(value, str) else json.dumps(value)


def overrides(params: dict[str, Any]) -> list[str]:
    return [f"--{key}={cli_value(value)}" for key, value in params.items()]


def configured_value(config: dict, key: str) -> Any:
    """The value a resolved config gives a dotted key, the CLI's shorthand allowed (`model.optimizer.lr` for
    `model.init_args.optimizer.init_args.lr`); None when it has none."""
    node: Any = config
    for part in key.split("."):
        if isinstance(node, dict) and part not in node and isinstance(node.get("init_args"), dict):
            node = node["init_args"]
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def baseline(config: dict, space: dict[str, BaseDistribution]) -> dict[str, Any] | None:
    """The configured values as a trial's parameters, when every one lies in the space."""
    params = {}
    for key, dist in space.items():
        value = configured_value(config, key)
        if isinstance(dist, CategoricalDistribution):
            value = json.dumps(value) if isinstance(value, list | dict) else value
            if value not in dist.choices:
                return None
        elif isinstance(value, bool) or not isinstance(value, int | float) or not dist.low <= value <= dist.high:
            return None
        params[key] = value
    return params


def check_space(parser: ArgumentParser, fit_args: list[str], space: dict[str, BaseDistribution], search: str) -> None:
    """Every key with every candidate value parsed against the experiment's schema (the launcher's `fit` parser),
    before any trial runs."""
    for key, dist in space.items():
        for value in candidates(dist):
            try:
                parser.parse_args([*fit_args, f"--{key}={cli_value(value)}"])
            except ArgumentError as err:
                refused = f"`{key}: {cli_value(value)}` is refused"
                raise LitlabError(f"--search={search}: {refused}: {explain(err)}") from None
