#!/usr/bin/env bash
# Local single-node Kafka (KRaft, no ZooKeeper) for snoopwatch development and tests.
#
#   kafka.sh up            start the broker (idempotent) and wait until it serves metadata
#   kafka.sh up --secured  ... plus SASL_SSL, SSL (mTLS) and SASL_PLAINTEXT listeners, with a
#                          throw-away CA and SCRAM users (or SNOOPWATCH_KAFKA_SECURED=1)
#   kafka.sh down [--wipe] stop it (idempotent); --wipe also deletes its data (topics, offsets)
#   kafka.sh status        exit 0 and print the pid if the broker serves metadata, else exit 1
#   kafka.sh logs [ARGS]   tail the broker log; ARGS go to tail, e.g. `logs -f` or `logs -n 500`
#
# See README.md next to this script for the environment variables.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/../.." && pwd)
POM_FILE=$SCRIPT_DIR/pom.xml
PROPS_TEMPLATE=$SCRIPT_DIR/server.properties.in

STATE_ROOT=${SNOOPWATCH_STATE_DIR:-$REPO_DIR/state}
[[ $STATE_ROOT == /* ]] || STATE_ROOT=$PWD/$STATE_ROOT
KAFKA_STATE=$STATE_ROOT/kafka
LIB_DIR=$KAFKA_STATE/lib
DATA_DIR=$KAFKA_STATE/data
LOG_FILE=$KAFKA_STATE/broker.log
PID_FILE=$KAFKA_STATE/broker.pid
PROPS_FILE=$KAFKA_STATE/server.properties
LOG4J_FILE=$KAFKA_STATE/log4j.properties
TOOLS_LOG4J_FILE=$KAFKA_STATE/tools-log4j.properties
MAVEN_LOG=$KAFKA_STATE/maven.log
LOCK_FILE=$KAFKA_STATE/.kafka.sh.lock
LIB_MARKER=$LIB_DIR/.snoopwatch-lib-complete
# Secured mode: the broker's keystore, truststore and CA key stay in SECURE_DIR; what a client
# needs (CA certificate, client certificate and key, the SCRAM user's password file) goes to
# CLIENT_DIR, which tests and local runs point SNOOPWATCH_SSL_* / SNOOPWATCH_SASL_* at.
SECURE_DIR=$KAFKA_STATE/secured
CLIENT_DIR=$SECURE_DIR/client
SECURED=${SNOOPWATCH_KAFKA_SECURED:-0}
SASL_USER=snoopwatch

HOST=127.0.0.1
NODE_ID=1
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
# Secured listeners (only with --secured), by default right above the controller port.
KAFKA_SASL_SSL_PORT=${KAFKA_SASL_SSL_PORT:-$((KAFKA_PORT + 2))}
KAFKA_SSL_PORT=${KAFKA_SSL_PORT:-$((KAFKA_PORT + 3))}
KAFKA_SASL_PLAINTEXT_PORT=${KAFKA_SASL_PLAINTEXT_PORT:-$((KAFKA_PORT + 4))}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-60}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
MAVEN_TIMEOUT=${KAFKA_MAVEN_TIMEOUT:-600}
HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}
LOG_ROTATE_BYTES=$((50 * 1024 * 1024))

die() {
    echo "kafka.sh: error: $*" >&2
    exit 1
}

info() {
    echo "kafka.sh: $*"
}

is_uint() {
    [[ $1 =~ ^[0-9]+$ ]]
}

check_settings() {
    local name value
    for name in KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_SASL_SSL_PORT KAFKA_SSL_PORT KAFKA_SASL_PLAINTEXT_PORT; do
        value=${!name}
        # Kubernetes injects KAFKA_PORT=tcp://host:port for a service named "kafka".
        if ! is_uint "$value" || ((value < 1 || value > 65535)); then
            die "$name='$value' is not a TCP port number"
        fi
    done
    [[ $KAFKA_PORT != "$KAFKA_CONTROLLER_PORT" ]] ||
        die "KAFKA_PORT and KAFKA_CONTROLLER_PORT are both $KAFKA_PORT; they must differ"
    [[ $SECURED == 0 || $SECURED == 1 ]] || die "SNOOPWATCH_KAFKA_SECURED='$SECURED' must be 0 or 1"
    if ((SECURED)); then
        local ports
        ports=$(printf '%s\n' "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SASL_SSL_PORT" \
            "$KAFKA_SSL_PORT" "$KAFKA_SASL_PLAINTEXT_PORT" | sort | uniq -d)
        [[ -z $ports ]] || die "port $ports is given to two listeners; the five ports must differ"
    fi
    for name in START_TIMEOUT STOP_TIMEOUT MAVEN_TIMEOUT; do
        is_uint "${!name}" || die "KAFKA_${name}='${!name}' is not a whole number of seconds"
    done
}

# --- Java ------------------------------------------------------------------------------------

JAVA=""
find_java() {
    if [[ -n ${KAFKA_JAVA:-} ]]; then
        JAVA=$KAFKA_JAVA
    elif [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
        JAVA=$JAVA_HOME/bin/java
    else
        JAVA=$(command -v java || true)
    fi
    [[ -n $JAVA && -x $JAVA ]] ||
        die "java not found (install a JRE 11+, e.g. 'apt-get install openjdk-17-jre-headless', or set JAVA_HOME)"
}

# --- Jars ------------------------------------------------------------------------------------

kafka_version() {
    local v
    v=$(sed -n 's:.*<kafka\.version>[[:space:]]*\([^<[:space:]]*\)[[:space:]]*</kafka\.version>.*:\1:p' "$POM_FILE" | head -n 1)
    [[ -n $v ]] || die "cannot read <kafka.version> from $POM_FILE"
    echo "$v"
}

lib_key() {
    # Re-fetch when the Kafka version or anything else in pom.xml changes.
    echo "kafka=$(kafka_version) pom-sha256=$(sha256sum "$POM_FILE" | cut -d' ' -f1)"
}

lib_complete() {
    [[ -f $LIB_MARKER && "$(cat "$LIB_MARKER")" == "$(lib_key)" ]] &&
        compgen -G "$LIB_DIR/kafka_2.13-$(kafka_version).jar" >/dev/null
}

ensure_lib() {
    lib_complete && return 0
    local version tmp rc=0
    version=$(kafka_version)
    command -v mvn >/dev/null ||
        die "mvn not found; it is needed once to fetch the Kafka $version jars into $LIB_DIR (apt-get install maven)"
    info "fetching Kafka $version jars from Maven Central into $LIB_DIR (one-time) ..."
    tmp=$LIB_DIR.tmp.$$
    rm -rf "$tmp"
    # shellcheck disable=SC2086  # KAFKA_MAVEN_ARGS is a list of extra maven options
    timeout "$MAVEN_TIMEOUT" mvn -B -Dstyle.color=never -f "$POM_FILE" ${KAFKA_MAVEN_ARGS:-} \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
        </dev/null >"$MAVEN_LOG" 2>&1 9>&- || rc=$?
    if ((rc != 0)) || ! compgen -G "$tmp/kafka_2.13-$version.jar" >/dev/null; then
        rm -rf "$tmp"
        local why="maven failed (exit $rc)"
        ((rc == 124)) && why="maven timed out after ${MAVEN_TIMEOUT}s"
        ((rc == 0)) && why="maven did not produce kafka_2.13-$version.jar"
        echo "kafka.sh: error: $why fetching Kafka $version jars; is Maven Central reachable? (full log: $MAVEN_LOG)" >&2
        local errors
        errors=$(sed 's/\x1b\[[0-9;]*m//g' "$MAVEN_LOG" | grep '^\[ERROR\]' |
            grep -vE '^\[ERROR\] *$|To see the full stack|Re-run Maven|For more information about|^\[ERROR\] \[Help ' |
            tail -n 8 || true)
        [[ -n $errors ]] || errors=$(tail -n 15 "$MAVEN_LOG")
        sed 's/^/    /' <<<"$errors" >&2
        exit 1
    fi
    lib_key >"$tmp/$(basename "$LIB_MARKER")"
    rm -rf "$LIB_DIR"
    mv "$tmp" "$LIB_DIR"
    info "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l) jars"
}

# --- Config files ----------------------------------------------------------------------------

sed_escape() {
    printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'
}

render_config() {
    [[ -f $PROPS_TEMPLATE ]] || die "missing $PROPS_TEMPLATE"
    sed -e "s|@HOST@|$(sed_escape "$HOST")|g" \
        -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
        -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
        -e "s|@DATA_DIR@|$(sed_escape "$DATA_DIR")|g" \
        "$PROPS_TEMPLATE" >"$PROPS_FILE.tmp"
    local leftover
    leftover=$(grep -v '^[[:space:]]*#' "$PROPS_FILE.tmp" | grep -o '@[A-Z_]*@' | head -n 1 || true)
    [[ -z $leftover ]] || die "unknown placeholder $leftover in $PROPS_TEMPLATE"
    mv "$PROPS_FILE.tmp" "$PROPS_FILE"

    # Broker: INFO to broker.log, with the chattiest loggers turned down.
    cat >"$LOG4J_FILE" <<EOF
# Written by kafka.sh on every 'up'; edits are overwritten.
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$LOG_FILE
log4j.appender.file.Append=true
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n

# Full config dumps (hundreds of lines for every client/broker config object).
log4j.logger.org.apache.kafka.common.config.AbstractConfig=WARN
log4j.logger.kafka.server.KafkaConfig=WARN
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel\$=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.authorizer.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.storage.internals.log.LogLoader=WARN
log4j.logger.kafka.log.UnifiedLog=WARN
log4j.logger.kafka.log.UnifiedLog\$=WARN
# Per-partition load/unload of __consumer_offsets (50 partitions) on every start and stop;
# rebalances are still logged by kafka.coordinator.group.GroupCoordinator.
log4j.logger.kafka.coordinator.group.GroupMetadataManager=WARN
log4j.logger.kafka.coordinator.transaction.TransactionStateManager=WARN
log4j.logger.org.apache.kafka.storage.internals.log.LocalLog=WARN
log4j.logger.kafka.cluster.Partition=WARN
log4j.logger.kafka.server.ReplicaFetcherManager=WARN
log4j.logger.kafka.server.ReplicaAlterLogDirsManager=WARN
log4j.logger.kafka.log.LogManager=WARN
EOF

    # One-shot tools (StorageTool, the Java readiness probe): warnings only, to stderr.
    cat >"$TOOLS_LOG4J_FILE" <<'EOF'
# Written by kafka.sh on every 'up'; edits are overwritten.
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

format_storage() {
    [[ -f $DATA_DIR/meta.properties ]] && return 0
    local cluster_id out
    cluster_id=$("$JAVA" -cp "$LIB_DIR/*" -Dlog4j.configuration="file:$TOOLS_LOG4J_FILE" \
        kafka.tools.StorageTool random-uuid 2>&1 9>&-) ||
        die "StorageTool random-uuid failed: $(echo "$cluster_id" | tail -n 3 | tr '\n' ' ')"
    cluster_id=$(echo "$cluster_id" | tail -n 1)
    info "formatting $DATA_DIR (cluster id $cluster_id)"
    mkdir -p "$DATA_DIR"
    out=$("$JAVA" -cp "$LIB_DIR/*" -Dlog4j.configuration="file:$TOOLS_LOG4J_FILE" \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS_FILE" 2>&1 9>&-) ||
        die "StorageTool format failed: $(echo "$out" | tail -n 3 | tr '\n' ' ')"
}

# --- Secured mode: throw-away CA, certificates, SCRAM users -----------------------------------

# Made once per state dir (kept across restarts, so clients' files stay valid); `down --wipe`
# deletes them with the data. Keys and passwords are mode 600.
make_secrets() {
    [[ -f $CLIENT_DIR/.complete ]] && return 0
    command -v openssl >/dev/null || die "openssl not found; it is needed for 'up --secured' (apt-get install openssl)"
    local keytool
    keytool=$(dirname "$(readlink -f "$JAVA")")/keytool
    [[ -x $keytool ]] || keytool=$(command -v keytool || true)
    [[ -n $keytool ]] || die "keytool not found next to $JAVA; it comes with the JDK/JRE (apt-get install openjdk-17-jre-headless)"
    rm -rf "$SECURE_DIR"
    mkdir -p "$CLIENT_DIR"
    chmod 700 "$SECURE_DIR"
    local out rc=0
    out=$(
        set -e
        umask 077
        cd "$SECURE_DIR"
        openssl rand -hex 24 >store-password
        openssl rand -hex 24 >"$CLIENT_DIR/password"
        echo "$SASL_USER" >"$CLIENT_DIR/username"
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -subj "/CN=snoopwatch local CA" \
            -keyout ca.key -out "$CLIENT_DIR/ca.pem" 2>&1
        # The broker's certificate names the loopback address and localhost (hostname checked).
        openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
            -keyout broker.key -out broker.csr 2>&1
        printf 'subjectAltName=IP:%s,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' "$HOST" >broker.ext
        openssl x509 -req -in broker.csr -CA "$CLIENT_DIR/ca.pem" -CAkey ca.key -CAcreateserial \
            -days 30 -sha256 -extfile broker.ext -out broker.pem 2>&1
        openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile "$CLIENT_DIR/ca.pem" \
            -name broker -out broker.p12 -passout file:store-password 2>&1
        "$keytool" -importcert -noprompt -alias snoopwatch-ca -file "$CLIENT_DIR/ca.pem" \
            -keystore truststore.p12 -storetype PKCS12 -storepass:file store-password 2>&1
        # The client's certificate, for the SSL (mutual TLS) listener.
        openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$SASL_USER" \
            -keyout "$CLIENT_DIR/client.key" -out client.csr 2>&1
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        openssl x509 -req -in client.csr -CA "$CLIENT_DIR/ca.pem" -CAkey ca.key -CAcreateserial \
            -days 30 -sha256 -extfile client.ext -out "$CLIENT_DIR/client.pem" 2>&1
        rm -f broker.csr client.csr
    ) || rc=$?
    ((rc == 0)) || die "making the throw-away CA and certificates failed: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    touch "$CLIENT_DIR/.complete"
    info "made a throw-away CA, broker and client certificates and a SCRAM password in $SECURE_DIR"
}

# Replaces the template's listener lines by the four listeners and appends their security.
secure_config() {
    local store_pw user_pw h=$HOST
    store_pw=$(cat "$SECURE_DIR/store-password")
    user_pw=$(cat "$CLIENT_DIR/password")
    sed -i -e '/^listeners=/d' -e '/^advertised\.listeners=/d' -e '/^listener\.security\.protocol\.map=/d' "$PROPS_FILE"
    local plain_jaas="org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER=\"$user_pw\";"
    local scram_jaas="org.apache.kafka.common.security.scram.ScramLoginModule required;"
    (
        umask 077
        cat >>"$PROPS_FILE" <<EOPROPS

# --- Secured mode (kafka.sh up --secured): written by kafka.sh, holds secrets (mode 600) ---
listeners=PLAINTEXT://$h:$KAFKA_PORT,CONTROLLER://$h:$KAFKA_CONTROLLER_PORT,SASL_SSL://$h:$KAFKA_SASL_SSL_PORT,SSL://$h:$KAFKA_SSL_PORT,SASL_PLAINTEXT://$h:$KAFKA_SASL_PLAINTEXT_PORT
advertised.listeners=PLAINTEXT://$h:$KAFKA_PORT,SASL_SSL://$h:$KAFKA_SASL_SSL_PORT,SSL://$h:$KAFKA_SSL_PORT,SASL_PLAINTEXT://$h:$KAFKA_SASL_PLAINTEXT_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
ssl.keystore.type=PKCS12
ssl.keystore.location=$SECURE_DIR/broker.p12
ssl.keystore.password=$store_pw
ssl.key.password=$store_pw
ssl.truststore.type=PKCS12
ssl.truststore.location=$SECURE_DIR/truststore.p12
ssl.truststore.password=$store_pw
# Mutual TLS: the SSL listener admits only clients with a certificate from the local CA.
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.plain.sasl.jaas.config=$plain_jaas
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=$scram_jaas
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$scram_jaas
listener.name.sasl_plaintext.plain.sasl.jaas.config=$plain_jaas
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=$scram_jaas
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=$scram_jaas
EOPROPS
    )
    chmod 600 "$PROPS_FILE"
}

# SCRAM-SHA-256 and -512 credentials for the user, with Kafka's own ConfigCommand (the
# kafka-configs tool) over the PLAINTEXT listener; idempotent, so it runs on every secured up.
# The password goes in through a file, never on a command line.
add_scram_users() {
    local pw cfg out mech rc=0
    pw=$(cat "$CLIENT_DIR/password")
    cfg=$SECURE_DIR/scram.properties
    # One mechanism per call: the broker refuses to alter a user's credential twice in one request.
    for mech in SCRAM-SHA-256 SCRAM-SHA-512; do
        (umask 077 && printf '%s=password=%s\n' "$mech" "$pw" >"$cfg")
        out=$(timeout 60 "$JAVA" -Xmx128m -cp "$LIB_DIR/*" -Dlog4j.configuration="file:$TOOLS_LOG4J_FILE" \
            kafka.admin.ConfigCommand --bootstrap-server "$HOST:$KAFKA_PORT" --alter \
            --entity-type users --entity-name "$SASL_USER" --add-config-file "$cfg" 2>&1 9>&-) || rc=$?
        rm -f "$cfg"
        ((rc == 0)) || die "creating the $mech user $SASL_USER failed: $(grep -m 1 -E 'Exception|Error' <<<"$out" | cut -c1-300)"
    done
}

secured_summary() {
    echo "kafka secured listeners on $HOST: SASL_SSL $KAFKA_SASL_SSL_PORT (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), SSL $KAFKA_SSL_PORT (client certificate required), SASL_PLAINTEXT $KAFKA_SASL_PLAINTEXT_PORT; user $SASL_USER; client files in $CLIENT_DIR"
}

# --- Processes and ports ---------------------------------------------------------------------

cmdline_of() {
    # Empty for a dead process and for a zombie (which `kill -0` still reports as alive).
    tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true
}

is_our_broker() {
    local cmd
    is_uint "${1:-}" || return 1
    cmd=$(cmdline_of "$1")
    [[ $cmd == *" kafka.Kafka $PROPS_FILE"* ]]
}

# Pid of the broker started from this state dir, or nothing. Trusts the pid file only if that
# pid still runs our command line (pids get reused); otherwise looks for an orphaned broker
# whose pid file was lost, so that we never start a second one on the same data dir.
our_pid() {
    local pid=""
    [[ -f $PID_FILE ]] && pid=$(tr -dc '0-9' <"$PID_FILE" || true)
    if is_our_broker "$pid"; then
        echo "$pid"
        return 0
    fi
    local p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        if is_our_broker "$p"; then
            echo "$p" >"$PID_FILE"
            echo "$p"
            return 0
        fi
    done
    rm -f "$PID_FILE"
    return 0
}

# The port a running broker from this state dir listens on (from its rendered config).
running_port() {
    local port
    port=$(sed -n "s|^advertised\.listeners=PLAINTEXT://[^:]*:\([0-9]*\).*|\1|p" "$PROPS_FILE" 2>/dev/null || true)
    echo "${port:-$KAFKA_PORT}"
}

# Prints a description of whoever listens on $HOST:$1 (bind-conflicting addresses only);
# prints nothing if the port is free.
port_user() {
    local port=$1 line
    if command -v ss >/dev/null; then
        line=$(ss -Hltnp "( sport = :$port )" 2>/dev/null |
            awk -v host="$HOST" '{ addr = $4; sub(/:[0-9]+$/, "", addr)
                if (addr == host || addr == "0.0.0.0" || addr == "*" || addr == "[::]" ||
                    addr == "[::ffff:" host "]") { print; exit } }')
        [[ -z $line ]] && return 0
        local pid
        pid=$(grep -o 'pid=[0-9]*' <<<"$line" | head -n 1 | cut -d= -f2)
        if [[ -n $pid ]]; then
            local cmd
            cmd=$(cmdline_of "$pid")
            if [[ $cmd =~ \ kafka\.Kafka\ ([^ ]+) ]]; then
                echo "pid $pid (another Kafka broker, config ${BASH_REMATCH[1]})"
            else
                echo "pid $pid ($(cut -c1-120 <<<"$cmd" | sed 's/ *$//'))"
            fi
        else
            echo "another process ($(awk '{print $4}' <<<"$line"))"
        fi
    elif timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$port" 2>/dev/null; then
        echo "another process"
    fi
}

check_ports_free() {
    local port who ports=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT")
    ((SECURED)) && ports+=("$KAFKA_SASL_SSL_PORT" "$KAFKA_SSL_PORT" "$KAFKA_SASL_PLAINTEXT_PORT")
    for port in "${ports[@]}"; do
        who=$(port_user "$port")
        [[ -z $who ]] ||
            die "port $HOST:$port is already in use by $who, not by this script's broker; stop it or set KAFKA_PORT/KAFKA_CONTROLLER_PORT"
    done
}

# --- Readiness probe: a real Metadata request, not just an open port -------------------------

PROBE_CMD=()
choose_probe() {
    local py=$REPO_DIR/.venv/bin/python
    case ${KAFKA_PROBE:-auto} in
        auto | python)
            if [[ -x $py ]] && "$py" -c 'import aiokafka' 2>/dev/null; then
                PROBE_CMD=(python "$py")
                return 0
            fi
            [[ ${KAFKA_PROBE:-auto} == python ]] && die "KAFKA_PROBE=python but $py cannot import aiokafka"
            ;;
        java) ;;
        *) die "KAFKA_PROBE must be auto, python or java (got '${KAFKA_PROBE}')" ;;
    esac
    # kafka.admin.BrokerApiVersionsCommand (in kafka_2.13) sends a Metadata request to the
    # bootstrap server, then ApiVersions to every broker that metadata lists.
    PROBE_CMD=(java)
}

# One attempt; exit 0 iff $HOST:$1 answers a Metadata request that lists broker $NODE_ID.
probe_once() {
    local port=$1
    if [[ ${PROBE_CMD[0]} == python ]]; then
        timeout 15 "${PROBE_CMD[1]}" - "$HOST:$port" "$NODE_ID" 2>&1 9>&- <<'EOF'
import asyncio, logging, sys
logging.disable(logging.CRITICAL)
from aiokafka import AIOKafkaClient

async def main(bootstrap, node_id):
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000,
                            connections_max_idle_ms=10000)
    try:
        await asyncio.wait_for(client.bootstrap(), 10)  # sends a MetadataRequest
        ids = sorted(b.nodeId for b in client.cluster.brokers())
        if node_id not in ids:
            sys.exit(f"metadata lists brokers {ids}, not {node_id}")
    finally:
        await client.close()

try:
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
except SystemExit:
    raise
except BaseException as e:
    sys.exit(f"{type(e).__name__}: {e}")
EOF
    else
        local out rc=0
        out=$(timeout 20 "$JAVA" -Xmx128m -cp "$LIB_DIR/*" -Dlog4j.configuration="file:$TOOLS_LOG4J_FILE" \
            kafka.admin.BrokerApiVersionsCommand --bootstrap-server "$HOST:$port" 2>&1 9>&-) || rc=$?
        # Success prints "127.0.0.1:9092 (id: 1 rack: null) -> (...api versions...)".
        if ((rc != 0)) || ! grep -q "(id: $NODE_ID " <<<"$out"; then
            grep -m 1 -E 'Exception|Error' <<<"$out" || tail -n 1 <<<"$out"
            return 1
        fi
    fi
}

# Reports a broker that died while starting: the cause in one line, then the last 30 lines
# that this start wrote to broker.log (not the previous run's shutdown).
die_broker_exited() {
    local pid=$1 from cause
    from=$(grep -n '^===== kafka.sh up at ' "$LOG_FILE" 2>/dev/null | tail -n 1 | cut -d: -f1)
    local this_run
    this_run=$(tail -n +"${from:-1}" "$LOG_FILE")
    # Prefer the exception ("java.lang.RuntimeException: Stored node id ..."), else any error.
    cause=$(grep -m 1 -E '^([a-zA-Z_$][a-zA-Z0-9_$]*\.)+[A-Za-z0-9_$]*(Exception|Error)\b' <<<"$this_run" ||
        grep -m 1 -E 'ERROR|^Error' <<<"$this_run" || true)
    cause=$(cut -c1-300 <<<"$cause")
    echo "kafka.sh: error: broker (pid $pid) exited during startup${cause:+: $cause}" >&2
    echo "kafka.sh: last 30 lines of $LOG_FILE:" >&2
    tail -n 30 <<<"$this_run" | sed 's/^/    /' >&2
    exit 1
}

# Waits until the broker (pid $1) serves metadata on port $2; dies if it exits or times out.
wait_ready() {
    local pid=$1 port=$2 start=$SECONDS last=""
    while true; do
        if last=$(probe_once "$port"); then
            return 0
        fi
        if ! is_our_broker "$pid"; then
            rm -f "$PID_FILE"
            die_broker_exited "$pid"
        fi
        if ((SECONDS - start >= START_TIMEOUT)); then
            echo "kafka.sh: error: broker (pid $pid) still not serving metadata on $HOST:$port after ${START_TIMEOUT}s (KAFKA_START_TIMEOUT); it is left running, see 'kafka.sh logs' or run 'kafka.sh down'. Last probe: $(echo "$last" | tail -n 1)" >&2
            exit 1
        fi
        sleep 0.5
    done
}

# --- Commands --------------------------------------------------------------------------------

take_lock() {
    mkdir -p "$KAFKA_STATE"
    exec 9>"$LOCK_FILE"
    if ! flock -n 9; then
        info "waiting for another kafka.sh in $KAFKA_STATE to finish ..."
        flock -w $((MAVEN_TIMEOUT + START_TIMEOUT + STOP_TIMEOUT + 30)) 9 ||
            die "timed out waiting for the lock $LOCK_FILE"
    fi
}

rotate_log() {
    if [[ -f $LOG_FILE ]] && (($(stat -c %s "$LOG_FILE") > LOG_ROTATE_BYTES)); then
        mv -f "$LOG_FILE" "$LOG_FILE.1"
    fi
}

cmd_up() {
    check_settings
    find_java
    take_lock
    local pid port
    pid=$(our_pid)
    if [[ -n $pid ]]; then
        port=$(running_port)
        [[ $port == "$KAFKA_PORT" ]] ||
            die "kafka from $KAFKA_STATE already runs on $HOST:$port (pid $pid), not on KAFKA_PORT=$KAFKA_PORT; run 'kafka.sh down' first"
        if ((SECURED)) && ! grep -q '^listeners=.*SASL_SSL://' "$PROPS_FILE"; then
            die "kafka from $KAFKA_STATE already runs on $HOST:$port (pid $pid) without the secured listeners; run 'kafka.sh down' first"
        fi
        ensure_lib
        choose_probe
        wait_ready "$pid" "$port"
        ((SECURED)) && secured_summary
        echo "kafka already running on $HOST:$port (pid $pid)"
        return 0
    fi

    check_ports_free
    ensure_lib
    render_config
    if ((SECURED)); then
        make_secrets
        secure_config
    fi
    format_storage
    choose_probe
    rotate_log

    local t0=$SECONDS
    echo "===== kafka.sh up at $(date -Is): Kafka $(kafka_version) on $HOST:$KAFKA_PORT =====" >>"$LOG_FILE"
    local jvm_opts=(
        $HEAP_OPTS  # word splitting intended: "-Xms256m -Xmx1g"
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
        -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError
        "-XX:ErrorFile=$KAFKA_STATE/hs_err_pid%p.log"
        -Djava.awt.headless=true
        "-Dlog4j.configuration=file:$LOG4J_FILE"
    )
    # shellcheck disable=SC2206  # KAFKA_JVM_OPTS is a list of extra JVM options
    [[ -n ${KAFKA_JVM_OPTS:-} ]] && jvm_opts+=($KAFKA_JVM_OPTS)
    # setsid: own session, so Ctrl-C in the calling shell or the end of a CI step does not
    # reach it. 9>&-: do not leak the lock fd into the broker (it would hold the lock forever).
    (
        cd "$KAFKA_STATE"
        exec setsid nohup "$JAVA" "${jvm_opts[@]}" -cp "$LIB_DIR/*" kafka.Kafka "$PROPS_FILE" \
            </dev/null >>"$LOG_FILE" 2>&1 9>&-
    ) &
    pid=$!
    # setsid forks only if it is a process-group leader (not the case here); double-check.
    sleep 0.2
    is_our_broker "$pid" || pid=$(our_pid)
    [[ -n $pid ]] || die_broker_exited "$!"
    echo "$pid" >"$PID_FILE"
    info "started broker pid $pid, waiting up to ${START_TIMEOUT}s for it to serve metadata ..."
    wait_ready "$pid" "$KAFKA_PORT"
    if ((SECURED)); then
        add_scram_users
        secured_summary
    fi
    echo "kafka running on $HOST:$KAFKA_PORT (pid $pid, ready in $((SECONDS - t0))s)"
}

cmd_down() {
    local wipe=0 arg
    for arg in "$@"; do
        case $arg in
            --wipe) wipe=1 ;;
            *) die "unknown option for down: $arg" ;;
        esac
    done
    check_settings
    take_lock
    local pid
    pid=$(our_pid)
    if [[ -z $pid ]]; then
        echo "kafka not running"
    else
        info "stopping broker pid $pid (SIGTERM, up to ${STOP_TIMEOUT}s) ..."
        kill -TERM "$pid" 2>/dev/null || true
        local ticks=$((STOP_TIMEOUT * 5)) # 0.2 s each
        while is_our_broker "$pid" && ((ticks-- > 0)); do
            sleep 0.2
        done
        if is_our_broker "$pid"; then
            echo "kafka.sh: warning: broker pid $pid did not stop within ${STOP_TIMEOUT}s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            ticks=50
            while is_our_broker "$pid" && ((ticks-- > 0)); do
                sleep 0.2
            done
            ! is_our_broker "$pid" || die "broker pid $pid survived SIGKILL"
        fi
        rm -f "$PID_FILE"
        echo "kafka stopped"
    fi
    if ((wipe)); then
        rm -rf "$DATA_DIR" "$SECURE_DIR"
        echo "kafka data wiped ($DATA_DIR${SECURE_DIR:+, $SECURE_DIR})"
    fi
}

cmd_status() {
    check_settings
    local pid port out
    pid=$(our_pid)
    if [[ -z $pid ]]; then
        echo "kafka not running"
        return 1
    fi
    port=$(running_port)
    find_java
    choose_probe
    if out=$(probe_once "$port"); then
        echo "kafka running on $HOST:$port (pid $pid)"
        return 0
    fi
    echo "kafka process pid $pid is alive but not serving metadata on $HOST:$port: $(echo "$out" | tail -n 1)"
    return 1
}

cmd_logs() {
    [[ -f $LOG_FILE ]] || die "no log yet at $LOG_FILE"
    if (($# == 0)); then
        exec tail -n 100 "$LOG_FILE"
    fi
    exec tail "$@" "$LOG_FILE"
}

usage() {
    sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
        up)
            if [[ ${1:-} == --secured ]]; then
                SECURED=1
                shift
            fi
            (($# == 0)) || die "unknown option for up: $1"
            cmd_up
            ;;
        down) cmd_down "$@" ;;
        wipe) cmd_down --wipe ;;
        status) cmd_status "$@" ;;
        logs) cmd_logs "$@" ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

# Sourcing the script (for tests) defines the functions without running a command.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
