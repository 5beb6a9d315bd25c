# Multi-stage build: a static sessionledger binary on a distroless base,
# running as a non-root user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sessionledger ./cmd/sessionledger \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sessionledger /usr/local/bin/sessionledger
# /data belongs to the non-root user, so a fresh named volume mounted there is writable.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sessionledger"]
CMD ["serve", "--data-dir", "/data", "--http-addr", ":8080"]
