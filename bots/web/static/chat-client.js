// The web chat in the browser, shared by the chat page (/) and the embeddable widget (/widget.js):
// the WebSocket protocol of adapters/web/channel.py and the conversation it shows. Each page
// brings its own markup and styles; this module fills the message log and says when to allow sending.

// The client id is the user and the conversation: kept per browser, under ``key``.
export function storedClientId(key) {
  let client = localStorage.getItem(key);
  if (!client) { client = crypto.randomUUID(); localStorage.setItem(key, client); }
  return client;
}

// The engine's 👍/👎 (actions feedback:up:<ref>, feedback:down:<ref>) drawn as an SVG thumb and a
// word: an emoji needs a font many machines lack, and shows as an empty box there.
const FEEDBACK = { up: "Helpful", down: "Not helpful" };
const THUMB = "M2 21h3V9H2v12zm19-11c0-1.1-.9-2-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.4-1.1L12.2 1 5.6 7.6C5.2 8 5 8.5 5 9v10c0 1.1.9 2 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1c.1-.2.2-.5.2-.7v-2z";
function feedbackKind(action) {
  const m = /^feedback:(up|down)(:|$)/.exec(action || "");
  return m ? m[1] : null;
}
// What a button (or the user's line after pressing it) says on the page.
export function buttonText(label, action) {
  const kind = feedbackKind(action);
  return kind ? FEEDBACK[kind] : label;
}
function thumb(kind) {
  const ns = "http://www.w3.org/2000/svg", svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24"); svg.setAttribute("width", "14"); svg.setAttribute("height", "14");
  svg.setAttribute("aria-hidden", "true"); svg.setAttribute("class", "icon");
  if (kind === "down") svg.setAttribute("transform", "rotate(180)");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", THUMB); path.setAttribute("fill", "currentColor");
  svg.appendChild(path);
  return svg;
}

// Connects to ``url`` (ws[s]://host/ws/chat) as ``client`` and keeps reconnecting. What is typed
// into ``input`` is sent when ``form`` is submitted; messages go into ``log`` (``intro``, if given,
// stays on top), "typing…" into ``typing``; ``onStatus(online, label)`` says whether sending is
// possible; ``onMessage(kind)`` is told of every message added. ``params`` go into the handshake's
// query (the widget's page, attributes and claimed identity: adapters/web/channel.py).
export function startChat({ url, client, form, input, log, typing, intro = null, onStatus, onMessage = () => {},
                            params = {} }) {
  let ws = null, retry = 500, partial = null;
  const pending = new Map();  // unacknowledged frames, resent after a reconnect
  // The frames the server began answering on this connection ("typing" comes first for each, in
  // order): a reply acknowledges those only. A frame sent meanwhile stays pending: a server that
  // stops closes the socket before reading it, and it goes again after the reconnect.
  let answering = [];

  // The knowledge base's sources of an answer, as chips: a link for a web page, the path (and
  // section) for a file. Built from text nodes only: nothing in a label becomes markup.
  function sourceChips(sources) {
    const row = document.createElement("div");
    row.className = "sources";
    for (const s of sources) {
      const chip = document.createElement(s.url ? "a" : "span");
      chip.className = "source";
      chip.textContent = s.label;
      chip.title = s.url || s.citation || s.label;
      if (s.url) { chip.href = s.url; chip.target = "_blank"; chip.rel = "noopener noreferrer"; }
      row.appendChild(chip);
    }
    return row;
  }

  // ``kind``: user, bot, agent (a person's reply: a bot bubble with their ``name`` on top), error.
  function add(kind, text, buttons, sources, name) {
    const div = document.createElement("div");
    div.className = "msg " + (kind === "agent" ? "bot agent" : kind);
    if (name) {
      const who = document.createElement("span");
      who.className = "sender"; who.textContent = name;
      div.appendChild(who);
    }
    div.appendChild(document.createTextNode(text));
    if (sources && sources.length) div.appendChild(sourceChips(sources));
    if (buttons && buttons.length) {
      const row = document.createElement("div");
      row.className = "buttons";
      for (const b of buttons) {
        const btn = document.createElement("button"), said = buttonText(b.label, b.action);
        btn.type = "button";
        const kind = feedbackKind(b.action);
        if (kind) { btn.appendChild(thumb(kind)); btn.className = "feedback " + kind; btn.setAttribute("aria-label", said); }
        btn.appendChild(document.createTextNode(said));
        // One answer per row (a rating counts once): the row goes, as it does when the page reloads.
        btn.onclick = () => { row.remove(); add("user", said); transmit({ action: b.action }); };
        row.appendChild(btn);
      }
      div.appendChild(row);
    }
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    onMessage(kind);
  }

  // On every (re)connect the server sends the conversation as it keeps it (agents' replies written
  // while this page was closed included): every line the page showed, with its buttons not yet used,
  // sources and the agent's name; it replaces what the page shows. An unanswered message stays
  // pending; one the history shows answered is dropped, so its answer is not shown twice.
  function showHistory(messages) {
    log.replaceChildren(...(intro ? [intro] : []));
    if (partial) { partial.remove(); partial = null; }
    for (const m of messages) {
      if (m.role === "user") add("user", buttonText(m.text, m.action));
      else add(m.role === "agent" ? "agent" : "bot", m.text, m.buttons, m.sources, m.name);
    }
    for (const [id, frame] of pending) {
      if (frame.text === undefined) continue;
      const at = messages.map((m) => m.role === "user" && m.text === frame.text).lastIndexOf(true);
      if (at < 0) add("user", frame.text);
      else if (messages.slice(at + 1).some((m) => m.role !== "user")) pending.delete(id);
    }
  }

  function transmit(body) {
    const frame = Object.assign({ id: crypto.randomUUID() }, body);
    pending.set(frame.id, frame);
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  }

  // Unanswered messages go again (marked resent) after a reconnect and every 10 s: the server
  // answers each message once, and repeats the answer to a resent one it already answered (on an
  // earlier connection: one it answered on this one, it does not answer again).
  function resend() {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    for (const frame of pending.values()) ws.send(JSON.stringify(Object.assign({}, frame, { resent: true })));
  }
  setInterval(resend, 10000);

  function connect() {
    const query = new URLSearchParams(Object.assign({}, params, { client }));
    ws = new WebSocket(`${url}?${query}`);
    ws.onopen = () => { onStatus(false, "connecting…"); retry = 500; };
    ws.onmessage = (ev) => {
      const data = JSON.parse(ev.data);
      if (data.type === "typing") {
        typing.textContent = "typing…";
        const next = [...pending.keys()].find((id) => !answering.includes(id));
        if (next !== undefined) answering.push(next);
        return;
      }
      if (data.type === "history") {  // always the first frame of a connection
        answering = [];
        showHistory(data.messages);
        onStatus(true, "online");
        resend();
        return;
      }
      if (data.type === "partial") {  // the reply so far; the final reply replaces it
        if (!partial) { partial = document.createElement("div"); partial.className = "msg bot partial"; log.appendChild(partial); }
        partial.textContent = data.text;
        log.scrollTop = log.scrollHeight;
        return;
      }
      if (partial) { partial.remove(); partial = null; }
      typing.textContent = "";
      for (const id of answering) pending.delete(id);  // the server answers frames in order
      answering = [];
      if (data.type === "reply") add(data.agent ? "agent" : "bot", data.text, data.buttons, data.sources, data.agent);
      else if (data.type === "error") add("error", data.error);
    };
    ws.onclose = () => {
      onStatus(false, "reconnecting…"); typing.textContent = "";
      setTimeout(connect, retry); retry = Math.min(retry * 2, 10000);
    };
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    add("user", text);
    transmit({ text });
    input.value = "";
  });
  connect();
}
