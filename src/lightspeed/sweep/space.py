"""Search spaces in Hydra's sweep syntax, as Optuna distributions; trial values as overrides."""

from __future__ import annotations

from typing import Any

from lightspeed.errors import ConfigError


def format_value(value: Any) -> str:
    """A trial's value as a Hydra override value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def distribution(key: str, text: str) -> Any:
    """The Optuna distribution that Hydra's sweep syntax ``text`` describes.

    ``choice(a, b, ...)`` → categorical; ``range(start, stop[, step])`` → integers (``stop``
    excluded, as in Python); ``interval(lo, hi)`` → floats in [lo, hi]; ``tag(log, ...)`` draws
    on a log scale, ``tag(int, interval(...))`` draws integers.
    """
    import optuna.distributions as d
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    where = f"hparams_search.params: {key}: {text}"
    try:
        value = OverridesParser.create().parse_override(f"{key}={text}").value()
    except HydraException as e:
        raise ConfigError(f"{where} does not parse ({str(e).splitlines()[0]})") from None
    tags = getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep):
        return d.CategoricalDistribution(list(value.list))
    if isinstance(value, RangeSweep) and value.step and value.step > 0 and value.stop > value.start:
        last = _frange(value.start, value.stop, value.step)[-1]
        if all(isinstance(v, int) for v in (value.start, value.step)):
            return d.IntDistribution(value.start, last, step=value.step)
        return d.FloatDistribution(value.start, last, step=value.step)
    if isinstance(value, IntervalSweep) and value.end > value.start:
        log_scale = "log" in tags
        if "int" in tags:
            return d.IntDistribution(int(value.start), int(value.end), log=log_scale)
        return d.FloatDistribution(value.start, value.end, log=log_scale)
    raise ConfigError(
        f"{where} is not a search space: use choice(a, b, ...), range(start, stop, step), "
        "interval(low, high) or tag(log, interval(low, high))"
    )


def _frange(start: float, stop: float, step: float) -> list[float]:
    values, v = [], start
    while v < stop:
        values.append(v)
        v = start + step * len(values)
    return values
