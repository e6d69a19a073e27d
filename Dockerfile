# tablesync: one image for every process (scheduler, workers, web console, one-shot commands).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY tablesync tablesync
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /var/lib/tablesync --create-home tablesync

USER tablesync
WORKDIR /var/lib/tablesync
ENTRYPOINT ["tablesync"]
CMD ["--help"]
