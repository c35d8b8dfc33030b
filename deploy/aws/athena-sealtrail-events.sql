-- Sealtrail's segments as an Athena (Glue) table, with partition projection over the store
-- layout segments/YYYY/MM/DD/HH/ (docs/FORMAT.md §9.5; docs/investigations.md has worked
-- queries). Replace BUCKET/PREFIX with the ingester's --store s3://BUCKET/PREFIX (no
-- PREFIX/: s3://BUCKET/segments/). A query that names year, month, day and hour reads only
-- those partitions.
--
-- One row per stored line: the header line of each segment has no event (filter with
-- "event IS NOT NULL"). The struct names the members investigations use; the OpenX SerDe
-- matches JSON member names case-insensitively (auditID -> auditid) and ignores the others.
-- Athena checks no hash, proof or signature: verify what it finds with
-- `sealtrail-verify search --audit-id ... --bundle FILE`.
CREATE EXTERNAL TABLE IF NOT EXISTS sealtrail_events (
  `index` bigint,
  event struct<
    auditid: string,
    stage: string,
    stagetimestamp: string,
    requestreceivedtimestamp: string,
    verb: string,
    requesturi: string,
    useragent: string,
    sourceips: array<string>,
    `user`: struct<username: string, groups: array<string>>,
    objectref: struct<resource: string, subresource: string, namespace: string, name: string, apigroup: string>,
    responsestatus: struct<code: int>
  >
)
PARTITIONED BY (`year` string, `month` string, `day` string, `hour` string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://BUCKET/PREFIX/segments/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.year.type' = 'integer',
  'projection.year.range' = '2024,2099',
  'projection.year.digits' = '4',
  'projection.month.type' = 'integer',
  'projection.month.range' = '1,12',
  'projection.month.digits' = '2',
  'projection.day.type' = 'integer',
  'projection.day.range' = '1,31',
  'projection.day.digits' = '2',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = 's3://BUCKET/PREFIX/segments/${year}/${month}/${day}/${hour}/'
);
