"""Coverage-guided fuzzing (atheris) of everything that parses raw input from users and platforms:
text cleaning, command parsing, PII scrubbing, the safety rules, web chat frames, and the Telegram
webhook and Slack events endpoints (through the real SDKs, with random bodies and signatures).
Prints cases tried and crashes per target; exits non-zero on a crash.

    python benchmarks/fuzz.py                  # 20,000 cases per target
    python benchmarks/fuzz.py --runs 200000 --targets text frames
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import atheris

with atheris.instrument_imports():
    from adapters.web.channel import parse_frame
    from core.safety.pii import scrub
    from core.safety.rules import SafetyFilter
    from core.text_input import clean_user_text, parse_command

SAFETY = SafetyFilter(blocklist=["darn", "heck"])


def text_target(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicode(4096)
    cleaned = clean_user_text(text)
    assert "\x00" not in cleaned
    parse_command(cleaned)
    scrub(text)
    SAFETY.check(text)


def frames_target(data: bytes) -> None:
    parse_frame(atheris.FuzzedDataProvider(data).ConsumeUnicode(4096))


class HttpTarget:
    """Posts fuzzed bodies to a platform endpoint of a running adapter on its own event loop."""

    def __init__(self, which: str) -> None:
        import httpx

        from bots.settings import Settings
        from bots.web.app import create_web_app
        from core.settings import from_settings

        defaults = Settings.model_construct()

        self.loop = asyncio.new_event_loop()
        self.which = which
        self.seen = {"ok": 0, "rejected": 0}

        async def no_engine(message, stream=None, stream_interval_s=0.0):
            return []  # the parsing, not the engine, is under test here

        if which == "telegram":
            from adapters.telegram.channel import TelegramChannel, TelegramConfig

            self.secret = "fuzz-secret"
            channel = TelegramChannel(
                no_engine,
                from_settings(
                    TelegramConfig,
                    defaults,
                    bot_token="1:fuzz",
                    api_url="http://127.0.0.1:9",
                    mode="webhook",
                    webhook_url="https://bot.example/hook",
                    webhook_secret=self.secret,
                ),  # fmt: skip
            )
            self.path = channel.config.webhook_path
        else:
            from adapters.slack.channel import SlackChannel, SlackConfig

            channel = SlackChannel(
                no_engine,
                from_settings(SlackConfig, defaults, bot_token="xoxb-fuzz", signing_secret="fuzz-secret"),
            )
            self.path = channel.config.events_path
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(create_web_app(channel.routes())), base_url="http://f"
        )

    def __call__(self, data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
        if fdp.ConsumeBool():  # often valid JSON, to get past the first check
            try:
                body = json.dumps(json.loads(body.decode("utf-8", "replace") or "{}")).encode()
            except (ValueError, RecursionError):
                pass
        headers = {"content-type": "application/json"}
        if self.which == "telegram":
            headers["X-Telegram-Bot-Api-Secret-Token"] = (
                self.secret if fdp.ConsumeBool() else fdp.ConsumeBytes(12).hex()
            )
        else:
            headers["X-Slack-Request-Timestamp"] = str(int(time.time()))
            headers["X-Slack-Signature"] = "v0=" + fdp.ConsumeBytes(32).hex()
        response = self.loop.run_until_complete(self.client.post(self.path, content=body, headers=headers))
        assert response.status_code < 500, (response.status_code, response.text[:200])
        self.seen["ok" if response.status_code == 200 else "rejected"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--targets", nargs="+", default=["text", "frames", "telegram", "slack"])
    args = parser.parse_args()
    targets = {"text": text_target, "frames": frames_target}
    for name in args.targets:
        target = targets.get(name) or HttpTarget(name)
        started = time.perf_counter()
        # atheris.Fuzz never returns; run each target in its own child process.
        import multiprocessing

        proc = multiprocessing.get_context("fork").Process(target=_fuzz, args=(target, args.runs))
        proc.start()
        proc.join()
        status = "0 crashes" if proc.exitcode == 0 else f"CRASH (exit {proc.exitcode})"
        print(
            f"fuzz {name:9s} {args.runs:>8,} cases in {time.perf_counter() - started:6.1f} s: {status}",
            flush=True,
        )
        if proc.exitcode != 0:
            sys.exit(1)


def _fuzz(target, runs: int) -> None:
    atheris.Setup([sys.argv[0], f"-runs={runs}", "-print_final_stats=0", "-max_len=4096"], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
