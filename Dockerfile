# kvserver in a small image: build with the Rust toolchain, run on Debian slim
# as an unprivileged user, data in the /data volume.
#
#   docker build -t keyvalue .
#   docker run -p 50051:50051 -v kvdata:/data keyvalue
#
# The container listens on all of its interfaces (that is what -p reaches);
# give it --tls-cert/--tls-key and --auth-token-file before exposing it beyond
# your machine (docs/OPERATIONS.md).

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so that editing the code does not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
# The manifest names these targets; cargo wants their files to exist.
COPY tests tests
COPY benches benches
RUN mkdir -p src/bin \
    && echo 'fn main() {}' > src/bin/kvserver.rs \
    && echo 'fn main() {}' > src/bin/kv.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bins \
    && rm -rf src
COPY src src
RUN touch src/lib.rs src/bin/*.rs && cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN groupadd --system kvserver \
    && useradd --system --gid kvserver --home-dir /data --shell /usr/sbin/nologin kvserver \
    && mkdir /data && chown kvserver:kvserver /data
COPY --from=build /src/target/release/kvserver /src/target/release/kv /usr/local/bin/
USER kvserver
VOLUME /data
EXPOSE 50051
STOPSIGNAL SIGTERM
ENTRYPOINT ["kvserver", "--listen", "0.0.0.0:50051", "--data-dir", "/data"]
