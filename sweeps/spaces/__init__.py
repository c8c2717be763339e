"""Declarative search spaces, one module per method slug (``sweeps/spaces/<slug>.py``).

Each module defines ``SPACE``: a dict from config field name to a Ray Tune domain (or a constant),
and optionally ``RANK_KEY``: the field ``--ranks`` fixes (``"r"`` unless stated; ``None`` = no rank).
Overrides use one string syntax on the CLI (``--space lr=loguniform:1e-5:1e-3``, ``--set t=50``) and
in YAML presets (``space: {lr: "loguniform:1e-5:1e-3"}``, ``set: {t: 50}``):

===========================  ===============================================
``loguniform:LO:HI``         log-uniform float
``uniform:LO:HI``            uniform float
``int:LO:HI``                uniform integer in [LO, HI] (inclusive)
``choice:A,B,C``             categorical (values parsed as YAML scalars)
``grid:A,B,C``               grid search (``--search grid`` only)
===========================  ===============================================
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import yaml
from ray import tune
from ray.tune.search.sample import Domain

__all__ = ["get_space", "is_domain_spec", "parse_domain", "parse_value", "rank_key", "with_overrides"]


def _module(slug: str):
    try:
        return importlib.import_module(f"sweeps.spaces.{slug}")
    except ModuleNotFoundError:
        raise ValueError(f"no search space for method {slug!r} (expected sweeps/spaces/{slug}.py)") from None


def get_space(slug: str) -> dict[str, Any]:
    """A copy of the method's default search space."""
    return dict(_module(slug).SPACE)


def rank_key(slug: str) -> str | None:
    """The config field that ``--ranks`` fixes for ``slug`` (None: the method has no rank)."""
    return getattr(_module(slug), "RANK_KEY", "r")


def parse_value(text: str) -> Any:
    """A scalar from the CLI/YAML (``1e-4`` → float, ``true`` → bool, ``none`` → None, else str)."""
    if text.strip().lower() in ("none", "null"):
        return None
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-4" as a string
        except ValueError:
            return value
    return value


#: The prefixes of the override syntax above.
DOMAIN_KINDS = ("loguniform", "uniform", "int", "choice", "grid")


def is_domain_spec(spec: Any) -> bool:
    """Whether ``spec`` is a Tune domain or a string in the override syntax (``KIND:…``)."""
    if isinstance(spec, Domain) or (isinstance(spec, dict) and "grid_search" in spec):
        return True
    return isinstance(spec, str) and spec.partition(":")[0].strip().lower() in DOMAIN_KINDS and ":" in spec


def parse_domain(spec: Any) -> Any:
    """A Tune domain from the override syntax above; non-strings and plain scalars pass through."""
    if isinstance(spec, Domain) or not isinstance(spec, str) or ":" not in spec:
        return parse_value(spec) if isinstance(spec, str) else spec
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    try:
        if kind in ("loguniform", "uniform", "int"):
            parts = rest.split(":")
            if len(parts) != 2:
                raise ValueError(f"expected {kind}:LOW:HIGH")
            lo, hi = (parse_value(x) for x in parts)
            lo, hi = (int(lo), int(hi)) if kind == "int" else (float(lo), float(hi))
            if not lo < hi and not (kind == "int" and lo == hi):
                raise ValueError(f"the lower bound {lo} must be below the upper bound {hi}")
            if kind == "loguniform" and lo <= 0:
                raise ValueError(f"a log-uniform range needs a positive lower bound, got {lo}")
            if kind == "loguniform":
                return tune.loguniform(float(lo), float(hi))
            if kind == "uniform":
                return tune.uniform(float(lo), float(hi))
            return tune.randint(int(lo), int(hi) + 1)
        if kind in ("choice", "grid"):
            values = [parse_value(x) for x in rest.split(",") if x.strip()]
            if not values:
                raise ValueError("no values")
            return tune.choice(values) if kind == "choice" else tune.grid_search(values)
    except (ValueError, TypeError) as e:
        raise ValueError(f"bad search-space spec {spec!r}: {e}") from None
    return parse_value(spec)  # e.g. a string value that contains ':'


#: Fields that exclude each other: setting one (pinned or searched) drops the other's default dimension.
EXCLUSIVE = {"k": "k_fraction", "k_fraction": "k"}


def with_overrides(
    space: Mapping[str, Any],
    *,
    space_overrides: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``space`` with dimensions replaced/added (``space_overrides``) and keys pinned (``fixed``)."""
    given = {*(space_overrides or {}), *(fixed or {})}
    out = {k: v for k, v in space.items() if not (EXCLUSIVE.get(k) in given and k not in given)}
    for key, spec in (space_overrides or {}).items():
        out[key] = parse_domain(spec)
    for key, value in (fixed or {}).items():
        out[key] = parse_value(value) if isinstance(value, str) else value
    return out


def has_grid(space: Mapping[str, Any]) -> bool:
    return any(isinstance(v, dict) and "grid_search" in v for v in space.values())
