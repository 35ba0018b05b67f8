"""The engine's light markdown per platform: formatting kept, everything else escaped."""

from __future__ import annotations

from adapters.markup import parse, to_discord_markdown, to_slack_mrkdwn, to_telegram_html

SAMPLE = "Hi **you** & <b>me</b>, *it* and `x<y` see [docs](https://e.com/?a=1&b=2)"


def test_parse_keeps_unmatched_markers_as_text() -> None:
    spans = list(parse("2*3*4 is **not closed and a_b_c"))
    assert [s.kind for s in spans] == ["text"]


def test_telegram_html() -> None:
    assert to_telegram_html(SAMPLE) == (
        "Hi <b>you</b> &amp; &lt;b&gt;me&lt;/b&gt;, <i>it</i> and <code>x&lt;y</code> "
        'see <a href="https://e.com/?a=1&amp;b=2">docs</a>'
    )
    assert to_telegram_html("```\nif a < b:\n```") == "<pre>if a &lt; b:\n</pre>"


def test_slack_mrkdwn_defuses_pings() -> None:
    assert to_slack_mrkdwn(SAMPLE) == (
        "Hi *you* &amp; &lt;b&gt;me&lt;/b&gt;, _it_ and `x&lt;y` see <https://e.com/?a=1&amp;b=2|docs>"
    )
    assert to_slack_mrkdwn("<!channel> hi <@U123>") == "&lt;!channel&gt; hi &lt;@U123&gt;"


def test_discord_markdown_escapes_plain_text_and_mentions() -> None:
    out = to_discord_markdown("**bold** 2*3*4 @everyone _x_")
    assert out.startswith("**bold** 2\\*3\\*4 @\u200beveryone *x*")
    assert to_discord_markdown("[a](https://e.com)") == "[a](<https://e.com>)"
