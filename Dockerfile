# livemart server image: one process per container; scale by running more containers.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY realtime ./realtime
COPY rooms ./rooms
COPY commerce ./commerce
COPY loadtest ./loadtest
COPY livemart ./livemart
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 livemart
USER livemart
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["livemart", "serve", "--host", "0.0.0.0", "--port", "8000"]
