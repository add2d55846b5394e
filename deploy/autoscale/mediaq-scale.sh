#!/bin/sh
# An external autoscaler for one machine: run as many mediaq-worker@N instances as the
# queue calls for, from the queue_depth view (`mediaq queue depth --workers MIN:MAX`).
# Started every 30 s by mediaq-scale.timer. Growing starts instances 1..N; shrinking
# stops the highest-numbered ones with SIGTERM, which drains them (running jobs
# finish within shutdown_grace_seconds; none is killed). The machine's category
# limits hold whatever the number of instances: the claim enforces them.
#
# Settings (environment, e.g. from /etc/mediaq/mediaq.env):
#   MEDIAQ_SCALE_RANGE            MIN:MAX instances (default 1:8)
#   MEDIAQ_SCALE_JOBS_PER_WORKER  parallel jobs one instance runs (default 4)
#   MEDIAQ_SCALE_CATEGORIES       categories served, space-separated (default: all)
#   MEDIAQ_BIN                    the mediaq command (default /opt/mediaq/.venv/bin/mediaq)
set -eu

mediaq=${MEDIAQ_BIN:-/opt/mediaq/.venv/bin/mediaq}
set --
for category in ${MEDIAQ_SCALE_CATEGORIES:-}; do
    set -- "$@" --category "$category"
done
want=$("$mediaq" queue depth --workers "${MEDIAQ_SCALE_RANGE:-1:8}" \
       --jobs-per-worker "${MEDIAQ_SCALE_JOBS_PER_WORKER:-4}" "$@")

active=$(systemctl list-units --state=active --plain --no-legend 'mediaq-worker@*.service' \
         | awk '{print $1}')
n=1
while [ "$n" -le "$want" ]; do
    systemctl start "mediaq-worker@$n.service"
    n=$((n + 1))
done
for unit in $active; do
    instance=${unit#mediaq-worker@}
    instance=${instance%.service}
    case $instance in
        *[!0-9]*|'') continue ;;  # instances not named by number are not ours to stop
    esac
    if [ "$instance" -gt "$want" ]; then
        systemctl stop --no-block "$unit"
    fi
done
echo "mediaq-scale: $want worker instance(s) wanted"
