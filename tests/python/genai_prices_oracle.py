"""The independent price oracle for `token_cost` (tests/it/prices.rs): random model calls priced by
pydantic's `genai-prices` package, written as CSV for tokenledger to price the same calls.

    python genai_prices_oracle.py OUT.csv CALLS SEED PROVIDER...

Calls cover cache reads, cache writes (5-minute and 1-hour), reasoning tokens, every service tier
a model has a price for (batch, flex, priority, …) from the day that price starts, long prompts
above the models' context thresholds, and instants across the price changes the data records.
Only models every part of whose price tokenledger applies are drawn: no per-request fees, no
time-of-day (off-peak) prices. PROVIDERs are taken in order, a model listed twice keeping the
first, as `tokenledger prices import --genai-prices` does.
"""

import csv
import datetime as dt
import random
import sys

from genai_prices import data, types

TOKEN_KEYS = {"input_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok",
              "output_mtok", "output_reasoning_mtok"}
START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
END = dt.datetime(2027, 6, 30, tzinfo=dt.timezone.utc)


def price_sets(model):
    prices = model.prices if isinstance(model.prices, list) else [types.ConditionalPrice(prices=model.prices)]
    return prices


def keys(model_price):
    return {k for k, v in vars(model_price).items() if v is not None and not k.startswith("_")}


def tier_of(variant):
    when = variant.when
    if len(when) != 1:
        return None
    (key, value), = when.items()
    if key == "processing" and value == "batch":
        return "batch"
    if key == "service_tier" and value not in ("default", "standard"):
        return value
    return None


def usable(model):
    """Whether tokenledger can price every call to `model` as genai-prices does."""
    for conditional in price_sets(model):
        if isinstance(conditional.constraint, types.TimeOfDateConstraint):
            return False
        if any("request" in k for k in keys(conditional.prices)):
            return False
        if "input_mtok" not in keys(conditional.prices):
            return False
    for variant in model.price_variants or ():
        if isinstance(variant.constraint, types.TimeOfDateConstraint):
            return False
        if any("request" in k for k in keys(variant.prices)):
            return False
    return True


def tiers(model):
    """Each service tier the model has a price for, with the instant it starts."""
    found = {"standard": START}
    for variant in model.price_variants or ():
        tier = tier_of(variant)
        if tier is None:
            continue
        start = START
        if isinstance(variant.constraint, types.StartDateConstraint):
            start = max(START, dt.datetime.combine(variant.constraint.start_date, dt.time(), dt.timezone.utc))
        found[tier] = min(found.get(tier, END), start)
    return found


def thresholds(model):
    out = set()
    for conditional in price_sets(model):
        for value in vars(conditional.prices).values():
            if isinstance(value, types.TieredPrices):
                out.update(t.start for t in value.tiers)
    return sorted(out)


def random_call(rng, model):
    sizes = [rng.randint(0, 2_000), rng.randint(2_000, 60_000)]
    limits = thresholds(model)
    if limits and rng.random() < 0.5:
        # Models with long-context rates get long prompts half the time: at, just above and
        # around a threshold.
        threshold = rng.choice(limits)
        sizes = [threshold, threshold + 1, rng.randint(threshold - 5_000, threshold + 80_000)]
    total = rng.choice(sizes)
    cached = rng.randint(0, total) if rng.random() < 0.6 else 0
    write = rng.randint(0, total - cached) if rng.random() < 0.5 else 0
    write_1h = rng.randint(0, write) if rng.random() < 0.4 else 0
    output = rng.randint(0, 8_000)
    reasoning = rng.randint(0, output) if rng.random() < 0.4 else 0
    return total, cached, write, write_1h, output, reasoning


def main():
    out, calls, seed, *providers = sys.argv[1:]
    rng = random.Random(int(seed))
    by_id = {p.id: p for p in data.providers}
    models, seen = [], set()
    for provider_id in providers:
        provider = by_id[provider_id]
        for model in provider.models:
            if model.id in seen:
                continue
            seen.add(model.id)
            if usable(model):
                models.append((provider, model))
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "model", "service_tier", "input_tokens", "cached_input_tokens",
                         "cache_write_input_tokens", "cache_write_1h_input_tokens", "output_tokens",
                         "reasoning_tokens", "at", "long_context", "expected_usd"])
        # Few models have long-context rates: a quarter of the calls go to them.
        long_models = [(p, m) for p, m in models if thresholds(m)]
        for call in range(int(calls)):
            provider, model = rng.choice(long_models if rng.random() < 0.25 else models)
            tier, start = rng.choice(sorted(tiers(model).items()))
            at = start + (END - start) * rng.random()
            at = at.replace(microsecond=0)
            total, cached, write, write_1h, output, reasoning = random_call(rng, model)
            usage = types.Usage(input_tokens=total, cache_read_tokens=cached, cache_write_tokens=write,
                                cache_write_1h_tokens=write_1h, output_tokens=output,
                                output_reasoning_tokens=reasoning)
            context = None
            if tier == "batch":
                context = {"processing": "batch"}
            elif tier != "standard":
                context = {"service_tier": tier}
            price = model.calc_price(usage, provider, genai_request_timestamp=at, price_context=context)
            long_context = any(total > t for t in thresholds(model))
            writer.writerow([call, model.id, tier, total, cached, write, write_1h, output, reasoning,
                             at.strftime("%Y-%m-%dT%H:%M:%SZ"), long_context, str(price.total_price)])


if __name__ == "__main__":
    main()
