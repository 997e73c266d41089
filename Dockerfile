# seqtag's image: the service (default command: seqtag serve) and the trainer (`seqtag train ...`, compose
# profile "train").
#   docker build -t seqtag .                                    the service's runtime only (CPU)
#   docker build -t seqtag-gpu --build-arg EXTRAS=gpu,train .   + TensorFlow's CUDA libraries and the train extra
FROM python:3.11-slim

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    SEQTAG_MODELS_DIR=/app/models PORT=8000

WORKDIR /app
RUN useradd --create-home --uid 1000 seqtag
# Dependencies first: a change to the code does not reinstall TensorFlow.
COPY pyproject.toml README.md ./
COPY training/__init__.py training/__init__.py
COPY service/__init__.py service/__init__.py
RUN pip install ".${EXTRAS:+[$EXTRAS]}" && pip uninstall -y seqtag
COPY training training
COPY service service
COPY models models
RUN pip install --no-deps . && chown -R seqtag /app/models
USER seqtag

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/readyz', timeout=4)"
CMD ["seqtag", "serve"]
