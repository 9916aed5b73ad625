# tusd-py: a slim, non-root image configured by TUSD_* environment variables.
#
#   docker build -t tusd-py .
#   docker run -p 8080:8080 -v uploads:/data tusd-py
#   docker run -p 8080:8080 -e TUSD_S3_BUCKET=uploads -e TUSD_REDIS_URL=redis://redis:6379/0 tusd-py
#
# Every command-line option has a variable: --max-size 5GiB is TUSD_MAX_SIZE=5GiB (see
# docs/configuration.md); arguments after the image name are passed to tusd-py as well.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tusd_py ./tusd_py
# Wheels for the package and every dependency, so the final stage needs no compiler or cache.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TUSD_HOST=0.0.0.0 \
    TUSD_PORT=8080 \
    TUSD_UPLOAD_DIR=/data
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin tusd \
    && mkdir /data \
    && chown tusd:tusd /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels tusd-py \
    && rm -rf /wheels
USER tusd:tusd
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/health' % os.environ.get('TUSD_PORT', '8080'), timeout=4)"
# uvicorn finishes in-flight requests for up to 30 s after SIGTERM: give the container longer
# (docker run --stop-timeout 40, compose stop_grace_period: 40s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tusd-py"]
