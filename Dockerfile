# Sentinel's container image: `docker build -t sentinel .`, then
#   docker run -v $PWD/sentinel.yaml:/etc/sentinel/sentinel.yaml:ro -p 127.0.0.1:9464:9464 sentinel
# Configuration is mounted, never baked in: it carries secrets.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sentinel ./sentinel
COPY adapters ./adapters
COPY rules ./rules
COPY runbooks ./runbooks
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /var/lib/sentinel --create-home sentinel
USER sentinel
WORKDIR /var/lib/sentinel
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]
ENTRYPOINT ["sentinel"]
CMD ["run", "-c", "/etc/sentinel/sentinel.yaml"]
