#!/bin/bash
# sealtrail-push-metrics FILE URL: the verifier CronJob's sidecar (deploy/base/verifier).
#
# Pushes FILE (the verifier's --metrics-file, Prometheus text format, written atomically)
# to the Prometheus Pushgateway group URL (.../metrics/job/sealtrail-verify) each time the
# file changes, and once more when the pod ends: Kubernetes sends SIGTERM to a sidecar
# after the verifier container exited. PUT replaces the whole group, so what Prometheus
# scrapes is always exactly one verification's result; the Pushgateway's push_time_seconds
# says when it was pushed (alert SealtrailVerificationMetricsStale).
set -u
file=${1:?usage: sealtrail-push-metrics FILE URL}
url=${2:?usage: sealtrail-push-metrics FILE URL}
last=""

push() {
  [ -s "$file" ] || return 0
  local now
  now=$(stat -c '%i %Y %s' "$file" 2>/dev/null) || return 0
  [ "$now" != "$last" ] || return 0
  if curl --silent --show-error --fail --max-time 10 --retry 3 --retry-connrefused \
       -X PUT -H 'Content-Type: text/plain; version=0.0.4' --data-binary "@$file" "$url"; then
    last=$now
    echo "sealtrail-push-metrics: pushed $file to $url"
  else
    echo "sealtrail-push-metrics: push to $url failed" >&2
  fi
}

trap 'push; exit 0' TERM INT
while :; do
  push
  sleep 5 &
  wait $!
done
