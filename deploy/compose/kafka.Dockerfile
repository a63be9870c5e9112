# A single-node Kafka 3.9.1 (KRaft) image for the compose stack, assembled from Maven Central
# with the same pom.xml as deploy/kafka/kafka.sh (no Kafka tarball). Build from the repo root:
#   docker build -f deploy/compose/kafka.Dockerfile -t snoopwatch-kafka:3.9.1 .
FROM maven:3.9-eclipse-temurin-17 AS jars
COPY deploy/kafka/pom.xml /build/pom.xml
RUN mvn -B -q -f /build/pom.xml dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory=/build/lib

FROM eclipse-temurin:17-jre
COPY --from=jars /build/lib /opt/kafka/lib
COPY deploy/compose/kafka-server.properties.in /opt/kafka/server.properties.in
COPY deploy/compose/kafka-log4j.properties /opt/kafka/log4j.properties
COPY deploy/compose/kafka-entrypoint.sh /opt/kafka/entrypoint.sh
RUN chmod +x /opt/kafka/entrypoint.sh && mkdir -p /var/lib/kafka
ENV KAFKA_LIB_DIR=/opt/kafka/lib \
    KAFKA_DATA_DIR=/var/lib/kafka/data \
    KAFKA_ADVERTISED_HOST=kafka \
    KAFKA_NUM_PARTITIONS=4
VOLUME /var/lib/kafka
EXPOSE 9092
ENTRYPOINT ["/opt/kafka/entrypoint.sh"]
