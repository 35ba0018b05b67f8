// The embeddable web chat. A site adds one tag, e.g.
//   <script src="https://bot.example.com/widget.js" data-title="Help" data-color="#0f766e" async></script>
// and gets a launcher bubble and a chat panel speaking the web chat's own protocol (chat-client.js,
// shared with the chat page). It is drawn in a shadow root, so the site's styles do not reach it and
// its styles do not reach the site; it defines no globals. What data attributes do not set comes from
// the bot's settings (GET /widget/config), which also says whether this site may embed the chat.
(() => {
  const PREFIX = "chat widget:";
  const POSITIONS = ["bottom-right", "bottom-left"];
  const script = document.currentScript;  // only known while this file first runs
  if (!script || !script.src) {
    console.error(`${PREFIX} load widget.js with <script src="https://…/widget.js">`);
    return;
  }
  const bot = new URL(script.src);
  const attributes = script.dataset;

  async function botSettings() {
    let response;
    try {
      response = await fetch(new URL("/widget/config", bot), { credentials: "omit" });
    } catch (error) {
      throw new Error(`could not reach the chat at ${bot.origin} (${error.message})`);
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `${bot.origin}/widget/config answered HTTP ${response.status}`);
    return body;
  }

  // A data attribute wins over the bot's setting, unless it is not a valid value.
  function chosen(name, fallback, valid) {
    const value = attributes[name];
    if (value === undefined) return fallback;
    if (valid(value)) return value;
    console.warn(`${PREFIX} ignoring data-${name.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase())}="${value}"`);
    return fallback;
  }

  function look(config) {
    const isColor = (v) => CSS.supports("color", v);
    return {
      title: chosen("title", config.title, (v) => v.trim() !== ""),
      greeting: chosen("greeting", config.greeting, () => true),
      color: chosen("color", config.color, isColor),
      textColor: chosen("textColor", config.text_color, isColor),
      position: chosen("position", config.position, (v) => POSITIONS.includes(v)),
    };
  }

  const STYLE = `
    :host { all: initial; }
    * { box-sizing: border-box; }
    .widget { position: fixed; bottom: 20px; right: 20px; z-index: 2147483000; color: #111827;
      font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; text-align: left; }
    .widget.bottom-left { right: auto; left: 20px; }
    .launcher { position: relative; width: 56px; height: 56px; margin: 0; padding: 0; border: 0; border-radius: 50%;
      background: var(--accent); color: var(--accent-text); cursor: pointer; display: flex;
      align-items: center; justify-content: center; box-shadow: 0 6px 20px rgba(0, 0, 0, .25); }
    .launcher svg { width: 28px; height: 28px; fill: currentColor; }
    .launcher.unread::after { content: ""; position: absolute; top: 3px; right: 3px; width: 12px; height: 12px;
      border-radius: 50%; background: #ef4444; border: 2px solid #fff; }
    .panel { position: absolute; bottom: 72px; right: 0; width: min(360px, calc(100vw - 40px));
      height: min(520px, calc(100vh - 120px)); display: flex; flex-direction: column; background: #f5f6f8;
      border-radius: 14px; overflow: hidden; box-shadow: 0 12px 40px rgba(0, 0, 0, .2); }
    .bottom-left .panel { right: auto; left: 0; }
    .panel[hidden] { display: none; }
    header { display: flex; align-items: center; gap: 8px; padding: 12px 14px; background: var(--accent);
      color: var(--accent-text); }
    .title { flex: 1; font-weight: 600; }
    .status { font-size: 12px; opacity: .8; }
    .close { margin: 0; padding: 0 2px; border: 0; background: none; color: inherit; font: inherit; font-size: 20px;
      line-height: 1; cursor: pointer; }
    .log { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 8px; }
    .msg { max-width: 80%; padding: 8px 12px; border-radius: 14px; white-space: pre-wrap; overflow-wrap: anywhere; }
    .user { align-self: flex-end; background: var(--accent); color: var(--accent-text); border-bottom-right-radius: 4px; }
    .bot, .greeting { align-self: flex-start; background: #fff; border: 1px solid #e5e7eb; border-bottom-left-radius: 4px; }
    .greeting { color: #374151; }
    .partial { opacity: .7; }
    .error { align-self: center; color: #b91c1c; font-size: 13px; }
    .sources { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 6px; white-space: normal; }
    .source { font-size: 12px; padding: 2px 9px; border-radius: 10px; background: #f3f4f6; color: #374151;
      border: 1px solid #e5e7eb; text-decoration: none; }
    a.source { color: var(--accent); }
    .buttons { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 6px; }
    .buttons button { margin: 0; padding: 3px 10px; border: 1px solid var(--accent); border-radius: 12px;
      background: #fff; color: var(--accent); font: inherit; font-size: 13px; cursor: pointer; }
    .buttons button .icon { vertical-align: -2px; margin-right: 4px; }
    .sender { display: block; font-size: 12px; font-weight: 600; color: var(--accent); margin-bottom: 2px; }
    .agent { border-color: #bfdbfe; background: #eff6ff; }
    .typing { min-height: 20px; padding: 0 12px 4px; color: #6b7280; font-size: 13px; }
    form { display: flex; gap: 8px; margin: 0; padding: 10px; background: #fff; border-top: 1px solid #e5e7eb; }
    .text { flex: 1; min-width: 0; margin: 0; padding: 9px 11px; border: 1px solid #d1d5db; border-radius: 10px;
      background: #fff; color: inherit; font: inherit; }
    .send { margin: 0; padding: 9px 14px; border: 0; border-radius: 10px; background: var(--accent);
      color: var(--accent-text); font: inherit; cursor: pointer; }
    .send:disabled { opacity: .5; cursor: default; }
  `;
  // Static markup only: every configured text goes in through textContent.
  const MARKUP = `
    <div class="widget">
      <section class="panel" role="dialog" hidden>
        <header><span class="title"></span><small class="status">connecting…</small>
          <button class="close" type="button" aria-label="Close chat">×</button></header>
        <div class="log" aria-live="polite"></div>
        <div class="typing"></div>
        <form autocomplete="off">
          <input class="text" placeholder="Type a message…" maxlength="20000" aria-label="Message">
          <button class="send" type="submit" disabled>Send</button>
        </form>
      </section>
      <button class="launcher" type="button" aria-label="Open chat" aria-expanded="false">
        <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H8l-5 4V5a2 2 0 0 1 1-2z"/></svg>
      </button>
    </div>`;

  // What the host page tells the agents: who the visitor is (data-user-id, data-user-name,
  // data-user-email, trusted only with data-user-hash, the HMAC its server computed) and any
  // data-attr-* (data-attr-plan="pro" → plan: pro), with the page the chat was opened on.
  function visitor() {
    const attrs = {};
    for (const [key, value] of Object.entries(attributes)) {
      if (key.startsWith("attr") && key.length > 4) attrs[key[4].toLowerCase() + key.slice(5)] = value;
    }
    const params = { page: location.href, attrs: JSON.stringify(attrs) };
    for (const [param, key] of [["user_id", "userId"], ["name", "userName"], ["email", "userEmail"],
                                ["user_hash", "userHash"]]) {
      if (attributes[key]) params[param] = attributes[key];
    }
    return params;
  }

  function mount(look, { startChat, storedClientId }) {
    const host = document.createElement("chatbot-widget");
    host.style.setProperty("all", "initial");  // inline: the site's rules for unknown elements lose
    const root = host.attachShadow({ mode: "open" });
    root.innerHTML = `<style>${STYLE}</style>${MARKUP}`;
    const $ = (selector) => root.querySelector(selector);
    const widget = $(".widget"), panel = $(".panel"), launcher = $(".launcher"), form = $("form");
    const input = $(".text"), send = $(".send"), status = $(".status"), log = $(".log");
    widget.classList.add(look.position);
    // Custom properties inherit from the site; set here, the site's own --accent cannot leak in.
    widget.style.setProperty("--accent", look.color);
    widget.style.setProperty("--accent-text", look.textColor);
    $(".title").textContent = look.title;
    panel.setAttribute("aria-label", look.title);
    const intro = document.createElement("div");
    intro.className = "msg greeting";
    intro.textContent = look.greeting;
    if (look.greeting) log.appendChild(intro);

    let started = false;  // connects on first open: no socket for visitors who never chat
    function open() {
      panel.hidden = false;
      launcher.setAttribute("aria-expanded", "true");
      launcher.classList.remove("unread");
      if (!started) {
        started = true;
        startChat({
          url: `${bot.protocol === "https:" ? "wss" : "ws"}://${bot.host}/ws/chat`,
          client: storedClientId(`chatbot-widget:${bot.origin}`), params: visitor(),
          form, input, log, typing: $(".typing"), intro: look.greeting ? intro : null,
          onStatus: (online, label) => { status.textContent = label; send.disabled = !online; },
          onMessage: (kind) => { if (panel.hidden && kind !== "user") launcher.classList.add("unread"); },
        });
      }
      input.focus();
    }
    function close() {
      panel.hidden = true;
      launcher.setAttribute("aria-expanded", "false");
      launcher.focus();
    }
    launcher.addEventListener("click", () => (panel.hidden ? open() : close()));
    $(".close").addEventListener("click", close);
    panel.addEventListener("keydown", (ev) => { if (ev.key === "Escape") close(); });
    document.body.appendChild(host);
  }

  const loaded = Promise.all([botSettings(), import(new URL("/chat-client.js", bot).href)]);
  const ready = new Promise((resolve) => {
    if (document.body) resolve();
    else document.addEventListener("DOMContentLoaded", resolve, { once: true });
  });
  Promise.all([loaded, ready])
    .then(([[config, client]]) => mount(look(config), client))
    .catch((error) => console.error(`${PREFIX} ${error.message}`));
})();
