# One image for the worker, Flower and the simulator; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY followup ./followup
COPY config ./config
COPY tasks ./tasks
COPY worker ./worker
COPY simulator ./simulator
COPY cli ./cli
# The worker needs only the base install; Flower and the simulator are extras.
RUN pip install '.[flower,simulator]' && useradd --create-home --uid 10001 followup
USER followup
CMD ["celery", "-A", "followup", "worker", "-l", "INFO"]
