"""An independent reader of tokenledger's curated tables: DuckDB's delta extension.

Usage: delta_reader.py TABLE_DIR [VERSION ...]
Prints one CSV line per state read: the latest, then each VERSION given:
  state,rows,input_tokens,distinct_spans
"""
import pathlib
import sys

import duckdb


def delta_extension() -> pathlib.Path:
    # duckdb-ext-delta ships the extension file; DuckDB 1.4.4 loads it without a download.
    site = pathlib.Path(duckdb.__file__).parent.parent
    found = sorted(site.glob("duckdb_ext/extensions/v*/*/delta.duckdb_extension"))
    if not found:
        sys.exit(f"no delta.duckdb_extension under {site}")
    return found[-1]


def main() -> None:
    table, versions = sys.argv[1], sys.argv[2:]
    db = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    db.execute(f"LOAD '{delta_extension()}'")
    measure = (
        "SELECT count(*), coalesce(sum(input_tokens), 0), count(DISTINCT span_id) FROM {source}"
    )
    states = [("latest", f"delta_scan('{table}')")]
    for version in versions:
        alias = f"v{version}"
        db.execute(f"ATTACH '{table}' AS {alias} (TYPE delta, VERSION {int(version)})")
        states.append((alias, alias))
    for name, source in states:
        rows, tokens, spans = db.execute(measure.format(source=source)).fetchone()
        print(f"{name},{rows},{tokens},{spans}")


if __name__ == "__main__":
    main()
