#!/usr/bin/env bash
# Entry point of the compose stack's Kafka image: render the config, format the storage on
# first start, then exec the broker. Every path and port comes from the environment, so
# tests/test_deploy.py runs this very script outside Docker, on free ports.
set -euo pipefail

LIB_DIR=${KAFKA_LIB_DIR:-/opt/kafka/lib}
DATA_DIR=${KAFKA_DATA_DIR:-/var/lib/kafka/data}
CONF_DIR=${KAFKA_CONF_DIR:-$(dirname "$(readlink -f "$0")")}
BROKER_PORT=${KAFKA_BROKER_PORT:-9092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_LISTEN_PORT:-9093}
ADVERTISED_HOST=${KAFKA_ADVERTISED_HOST:-kafka}
NUM_PARTITIONS=${KAFKA_NUM_PARTITIONS:-4}
HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}
PROPS=${KAFKA_RENDERED_PROPS:-/tmp/server.properties}
JAVA=${JAVA:-java}

for v in BROKER_PORT CONTROLLER_PORT NUM_PARTITIONS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "kafka-entrypoint: $v='${!v}' is not a number" >&2; exit 2; }
done

sed -e "s|@BROKER_PORT@|$BROKER_PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
    -e "s|@ADVERTISED_HOST@|$ADVERTISED_HOST|g" -e "s|@NUM_PARTITIONS@|$NUM_PARTITIONS|g" \
    -e "s|@DATA_DIR@|$DATA_DIR|g" "$CONF_DIR/server.properties.in" >"$PROPS"

log4j=(-Dlog4j.configuration="file:$CONF_DIR/log4j.properties")
if [[ ! -f $DATA_DIR/meta.properties ]]; then
    mkdir -p "$DATA_DIR"
    cluster_id=$("$JAVA" "${log4j[@]}" -cp "$LIB_DIR/*" kafka.tools.StorageTool random-uuid | tail -n 1)
    "$JAVA" "${log4j[@]}" -cp "$LIB_DIR/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS"
fi

# shellcheck disable=SC2206  # HEAP_OPTS is a list of JVM options
exec "$JAVA" $HEAP_OPTS -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    "${log4j[@]}" -cp "$LIB_DIR/*" kafka.Kafka "$PROPS"
