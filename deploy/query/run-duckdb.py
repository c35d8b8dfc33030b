#!/usr/bin/env python3
"""Runs a Sealtrail DuckDB recipe: run-duckdb.py RECIPE.sql SEGMENTS_DIR FROM TO.

Sets the recipe's variables (segments, t_from, t_to), runs it, and prints the result as
tab-separated values with a header line (the same shape as `sealtrail-verify search
--count-by`), so the two can be compared.
"""
import sys

import duckdb


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    recipe, segments, t_from, t_to = sys.argv[1:]
    con = duckdb.connect()
    for name, value in (("segments", segments), ("t_from", t_from), ("t_to", t_to)):
        con.execute(f"SET VARIABLE {name} = ?", [value])
    with open(recipe, encoding="utf-8") as f:
        result = con.execute(f.read())
    names = [d[0] for d in result.description]
    print("\t".join(names))
    for row in result.fetchall():
        print("\t".join(str(v) for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
