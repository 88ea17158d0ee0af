"""Writes the price data of the installed `genai-prices` package as its published JSON
(the `prices/data.json` of github.com/pydantic/genai-prices: a list of providers, each with its
models, their prices, conditional prices and price variants), for `tokenledger prices import
--genai-prices FILE`.

    pip install genai-prices && python scripts/genai_prices_json.py > genai-prices.json

The output is checked before it is written: genai-prices' own parser reads it back to the same
prices, so it is the format the package itself fetches when it updates.
"""

import dataclasses
import datetime
import decimal
import json
import sys

from genai_prices import data, types


def plain(value):
    """`value` (a genai-prices object) as JSON-ready data, in the published file's spelling."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, types.ModelPrice):
        return {k: plain(v) for k, v in vars(value).items() if v is not None and not k.startswith("_")}
    if isinstance(value, types.ClauseOr):
        return {"or": [plain(c) for c in value.or_]}
    if isinstance(value, types.ClauseAnd):
        return {"and": [plain(c) for c in value.and_]}
    if isinstance(value, types.ArrayMatch):
        return {"type": value.type, "field": value.field, "match": plain(value.match)}
    if dataclasses.is_dataclass(value):
        return {
            f.name: plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None and not f.name.startswith("_")
        }
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def provider_json(provider):
    # Usage extractors describe API responses, not prices: left out.
    out = plain(dataclasses.replace(provider, extractors=None))
    return out


def main():
    raw = [provider_json(p) for p in data.providers]
    # Read back with the package's own parser: every model's prices must survive.
    reread = {p.id: p for p in types._providers_from_raw(json.loads(json.dumps(raw)))}
    for provider in data.providers:
        again = {m.id: m for m in reread[provider.id].models}
        for model in provider.models:
            twin = again[model.id]
            if str(plain(model.prices)) != str(plain(twin.prices)) or str(
                plain(model.price_variants)
            ) != str(plain(twin.price_variants)):
                raise SystemExit(f"{provider.id}/{model.id}: prices did not survive the round trip")
    json.dump(raw, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
