"""The ``chatbot`` command line."""

from __future__ import annotations

import asyncio
import os

# Before torch loads OpenMP: spinning worker threads starve everything else on a busy machine
# (measured here: a tiny model's generation took 10 s instead of 60 ms next to a training run).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer

from bots.cli.admin import app as admin_app
from bots.cli.agents import app as agents_app
from bots.cli.kb import app as kb_app
from bots.logs import setup_logging
from bots.settings import get_settings
from core.model.backend import ModelNotFoundError
from core.model.versions import resolve_model_dir

app = typer.Typer(help="Self-hostable chatbot: train it, chat with it, serve it.", no_args_is_help=True)


def _fail(error: Exception) -> None:
    typer.secho(str(error), fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def run(
    host: str = typer.Option(None, help="Bind address of the web server (default WEB_HOST)."),
    port: int = typer.Option(None, help="Port of the web server (default WEB_PORT)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the web chat in a browser."),
    only: str = typer.Option(
        None, "--only", help="Run one platform in this process: telegram, slack, discord or web."
    ),
) -> None:
    """Serve the bot: the local web chat and every platform whose credentials are configured."""
    from bots.platforms import PlatformNotConfiguredError
    from bots.runner import serve

    settings = get_settings()
    overrides = {k: v for k, v in {"web_host": host, "web_port": port}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    setup_logging(settings.log_level, settings.log_json)
    try:
        asyncio.run(serve(settings, open_browser=open_browser, only=only))
    except (ModelNotFoundError, PlatformNotConfiguredError, ValueError) as error:
        _fail(error)
    except KeyboardInterrupt:
        pass


@app.command(name="model-server")
def model_server(
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    port: int = typer.Option(8000, help="Port."),
) -> None:
    """Serve MODEL_PATH behind an OpenAI-compatible API (for MODEL_BACKEND=openai bots, any OpenAI client)."""
    import uvicorn

    from bots.model_server import create_model_server
    from core.builder import transformers_backend_from

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_json)
    try:
        backend = transformers_backend_from(settings, resolve_model_dir(settings.model_path))
    except ModelNotFoundError as error:
        _fail(error)
    uvicorn.run(create_model_server(backend), host=host, port=port, log_level="warning")


@app.command()
def chat(
    user: str = typer.Option(None, help="User name for this conversation (default: your login)."),
) -> None:
    """Chat with the bot in this terminal."""
    from bots.cli.terminal_chat import chat as terminal_chat

    settings = get_settings()
    setup_logging("WARNING", settings.log_json)
    try:
        asyncio.run(terminal_chat(settings, user))
    except ModelNotFoundError as error:
        _fail(error)


@app.command()
def calibrate(
    conversations: str = typer.Option(
        "data/clean/val.jsonl", help="Held-out conversations, JSONL ({'turns': [{'role', 'text'}]} per line)."
    ),
    samples: int = typer.Option(200, min=1, help="Conversation openings to answer."),
    target: float = typer.Option(0.05, min=0.001, max=0.5, help="Share of replies the suggestion flags."),
    max_turns: int = typer.Option(6, min=1, help="Turns of context given with each opening."),
    plot: str = typer.Option(None, help="Also draw the score histogram to this PNG (needs matplotlib)."),
    seed: int = typer.Option(0, help="Which openings are sampled."),
) -> None:
    """Score the model's replies to held-out conversations; suggest LOW_CONFIDENCE_SCORE for it."""
    from bots.cli.calibrate import Calibration, best_scores, contexts
    from bots.cli.calibrate import plot as draw
    from core.builder import local_backend_from

    settings = get_settings()
    setup_logging("WARNING", settings.log_json)
    if not os.path.exists(conversations):
        _fail(FileNotFoundError(f"{conversations} not found (chatbot train clean writes data/clean/)"))
    histories = contexts(conversations, samples, max_turns, seed)
    if not histories:
        _fail(ValueError(f"{conversations} holds no conversation with two speakers"))

    async def score() -> tuple[str, list[float]]:
        backend = local_backend_from(settings)
        try:
            return backend.version, await best_scores(backend, histories, settings.model_max_batch)
        finally:
            await backend.aclose()

    try:
        version, scores = asyncio.run(score())
    except ModelNotFoundError as error:
        _fail(error)
    result = Calibration(scores, settings.low_confidence_score, target)
    typer.echo(f"model {version}\n{result.report()}")
    if plot:
        draw(result, plot, f"reply scores of {version} ({len(scores)} replies)")
        typer.echo(f"plot: {plot}")


@app.command()
def config(
    markdown: bool = typer.Option(False, help="Print the table of every variable for the README."),
) -> None:
    """Show the configuration in force (secrets masked), or document every variable."""
    from bots.cli.settings_doc import current_values, markdown_table
    from bots.settings import Settings

    typer.echo(markdown_table(Settings) if markdown else current_values(get_settings()))


app.add_typer(agents_app, name="agents")
app.add_typer(admin_app, name="admin")
app.add_typer(kb_app, name="kb")


@app.command(
    name="train",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def train(ctx: typer.Context) -> None:
    """Train, evaluate and register models (chatbot train --help lists the stages)."""
    # Imported when used: the training stages load torch, which no other command needs at start-up.
    try:
        from training.cli import app as train_app
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] == "training":
            raise  # our own bug, not a missing extra
        _fail(
            RuntimeError(
                f"training needs the [train] extra (missing {error.name}): pip install 'chatbot[train]'"
            )
        )
    train_app(args=ctx.args, prog_name="chatbot train")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
