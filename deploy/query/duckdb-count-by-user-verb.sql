-- Events per user and verb in a time range, over Sealtrail segment files
-- (docs/investigations.md). Set three variables first:
--   SET VARIABLE segments = '/path/to/store/segments';   -- or 's3://BUCKET/PREFIX/segments'
--   SET VARIABLE t_from = '2023-06-12T13:00:00Z';        -- stageTimestamp >= t_from
--   SET VARIABLE t_to   = '2023-06-12T14:00:00Z';        -- stageTimestamp <  t_to
-- Segment files are JSON Lines: a header line (no "event"), then one record per event
-- ({"event": …, "index": …, "proof": […]}). Reading only the columns below skips the
-- header's members; "WHERE event IS NOT NULL" skips the header line itself.
-- What this does NOT check: leaf hashes, inclusion proofs, checkpoint signatures. Verify
-- what it finds with `sealtrail-verify search … --bundle`.
SELECT
  count(*) AS "count",
  coalesce(event ->> '$.user.username', '-') AS "user",
  coalesce(event ->> '$.verb', '-') AS verb
FROM read_ndjson(
  getvariable('segments') || '/*/*/*/*/*.jsonl',
  columns = {'index': 'UBIGINT', 'event': 'JSON'}
)
WHERE event IS NOT NULL
  AND CAST(event ->> '$.stageTimestamp' AS TIMESTAMPTZ) >= CAST(getvariable('t_from') AS TIMESTAMPTZ)
  AND CAST(event ->> '$.stageTimestamp' AS TIMESTAMPTZ) < CAST(getvariable('t_to') AS TIMESTAMPTZ)
GROUP BY ALL
ORDER BY "count" DESC, "user", verb;
