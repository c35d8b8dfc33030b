#!/usr/bin/env python3
"""Checks the Athena table and example queries offline: check-athena.py DDL.sql QUERIES.sql.

Parses every statement with sqlglot's Athena dialect (an error fails), and checks that the
table's partition projection covers the store layout (segments/YYYY/MM/DD/HH/: integer
projections with 4, 2, 2, 2 digits over the right ranges, and the location template) and
that each example query reads the table and bounds its partitions.
"""
import sys

import sqlglot
from sqlglot import exp

WANT = {
    "projection.enabled": "true",
    "projection.year.type": "integer",
    "projection.year.digits": "4",
    "projection.month.type": "integer",
    "projection.month.range": "1,12",
    "projection.month.digits": "2",
    "projection.day.type": "integer",
    "projection.day.range": "1,31",
    "projection.day.digits": "2",
    "projection.hour.type": "integer",
    "projection.hour.range": "0,23",
    "projection.hour.digits": "2",
    "storage.location.template": "s3://BUCKET/PREFIX/segments/${year}/${month}/${day}/${hour}/",
}


def fail(why: str) -> int:
    print(f"check-athena: {why}", file=sys.stderr)
    return 1


def main() -> int:
    ddl_path, queries_path = sys.argv[1:3]
    with open(ddl_path, encoding="utf-8") as f:
        ddl = sqlglot.parse(f.read(), read="athena")
    creates = [s for s in ddl if isinstance(s, exp.Create)]
    if len(creates) != 1:
        return fail(f"{ddl_path}: expected one CREATE, found {len(creates)}")
    create = creates[0]
    props = {}
    for p in create.find_all(exp.Property):
        name = p.name if isinstance(p.this, str) else p.this.name if p.this else None
        if name and p.args.get("value") is not None:
            props[name] = p.args["value"].name
    for k, v in WANT.items():
        if props.get(k) != v:
            return fail(f"{ddl_path}: TBLPROPERTIES {k} = {props.get(k)!r}, want {v!r}")
    parts = [c.name for c in create.find_all(exp.PartitionedByProperty)
             for c in c.find_all(exp.ColumnDef)]
    if parts != ["year", "month", "day", "hour"]:
        return fail(f"{ddl_path}: partitioned by {parts}")
    with open(queries_path, encoding="utf-8") as f:
        queries = [q for q in sqlglot.parse(f.read(), read="athena") if q is not None]
    if not queries:
        return fail(f"{queries_path}: no query")
    for q in queries:
        tables = {t.name for t in q.find_all(exp.Table)}
        cols = {c.name for c in q.find_all(exp.Column)}
        if tables != {"sealtrail_events"} or not {"year", "month", "day"} <= cols:
            return fail(f"{queries_path}: a query that does not bound its partitions: {q.sql()[:120]}")
    print(f"ok: 1 table, {len(queries)} queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
