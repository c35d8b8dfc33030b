-- Worked Athena queries over the table of deploy/aws/athena-sealtrail-events.sql
-- (docs/investigations.md). Each names its hour partitions so that only those are read.

-- Who read a Secret in the default namespace, 2026-11-27 between 02:00 and 03:00 UTC.
SELECT event.stagetimestamp, event.user.username, event.verb, event.objectref.name,
       event.responsestatus.code, event.auditid
FROM sealtrail_events
WHERE year = '2026' AND month = '11' AND day = '27' AND hour IN ('02', '03')
  AND event IS NOT NULL
  AND event.objectref.resource = 'secrets' AND event.objectref.namespace = 'default'
  AND event.verb IN ('get', 'list', 'watch')
  AND event.stage = 'ResponseComplete'
  AND from_iso8601_timestamp(event.stagetimestamp)
      BETWEEN from_iso8601_timestamp('2026-11-27T02:00:00Z')
          AND from_iso8601_timestamp('2026-11-27T02:59:59.999999Z')
ORDER BY event.stagetimestamp;

-- Who exec'd into a pod.
SELECT event.stagetimestamp, event.user.username, event.objectref.namespace,
       event.objectref.name, event.sourceips, event.auditid
FROM sealtrail_events
WHERE year = '2026' AND month = '11' AND day = '27'
  AND event IS NOT NULL
  AND event.objectref.resource = 'pods' AND event.objectref.subresource IN ('exec', 'attach')
ORDER BY event.stagetimestamp;

-- Requests refused with 403, by user, over a day.
SELECT event.user.username, count(*) AS refused
FROM sealtrail_events
WHERE year = '2026' AND month = '11' AND day = '27'
  AND event IS NOT NULL AND event.responsestatus.code = 403
GROUP BY event.user.username
ORDER BY refused DESC;

-- Events per user and verb in one hour (what `search --count-by user --count-by verb` counts).
SELECT count(*) AS n, event.user.username, event.verb
FROM sealtrail_events
WHERE year = '2026' AND month = '11' AND day = '27' AND hour IN ('02', '03')
  AND event IS NOT NULL
  AND from_iso8601_timestamp(event.stagetimestamp) >= from_iso8601_timestamp('2026-11-27T02:00:00Z')
  AND from_iso8601_timestamp(event.stagetimestamp) < from_iso8601_timestamp('2026-11-27T03:00:00Z')
GROUP BY event.user.username, event.verb
ORDER BY n DESC;
