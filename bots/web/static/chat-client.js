// The web chat in the browser, shared by the chat page (/) and the embeddable widget (/widget.js):
// the WebSocket protocol of adapters/webchat_channel.py and the conversation it shows. Each page
// brings its own markup and styles; this module fills the message log and says when to allow sending.

// The client id is the user and the conversation: kept per browser, under ``key``.
export function storedClientId(key) {
  let client = localStorage.getItem(key);
  if (!client) { client = crypto.randomUUID(); localStorage.setItem(key, client); }
  return client;
}

// Connects to ``url`` (ws[s]://host/ws/chat) as ``client`` and keeps reconnecting. What is typed
// into ``input`` is sent when ``form`` is submitted; messages go into ``log`` (``intro``, if given,
// stays on top), "typing…" into ``typing``; ``onStatus(online, label)`` says whether sending is
// possible; ``onMessage(kind)`` is told of every message added.
export function startChat({ url, client, form, input, log, typing, intro = null, onStatus, onMessage = () => {} }) {
  let ws = null, retry = 500, partial = null;
  const pending = new Map();  // unacknowledged frames, resent after a reconnect

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

  function add(kind, text, buttons, sources) {
    const div = document.createElement("div");
    div.className = "msg " + kind;
    div.textContent = text;
    if (sources && sources.length) div.appendChild(sourceChips(sources));
    if (buttons && buttons.length) {
      const row = document.createElement("div");
      row.className = "buttons";
      for (const b of buttons) {
        const btn = document.createElement("button");
        btn.type = "button"; btn.textContent = b.label;
        btn.onclick = () => { add("user", b.label); transmit({ action: b.action }); };
        row.appendChild(btn);
      }
      div.appendChild(row);
    }
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    onMessage(kind);
  }

  // On every (re)connect the server sends the conversation as it keeps it (agents' replies written
  // while this page was closed included); it replaces what the page shows. An unanswered message
  // stays pending; one the history shows answered is dropped, so its answer is not shown twice.
  function showHistory(messages) {
    log.replaceChildren(...(intro ? [intro] : []));
    if (partial) { partial.remove(); partial = null; }
    for (const m of messages) add(m.role === "user" ? "user" : "bot", m.text);
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
  // answers each message once, and repeats the answer to a resent one it already answered.
  function resend() {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    for (const frame of pending.values()) ws.send(JSON.stringify(Object.assign({}, frame, { resent: true })));
  }
  setInterval(resend, 10000);

  function connect() {
    ws = new WebSocket(`${url}?client=${encodeURIComponent(client)}`);
    ws.onopen = () => { onStatus(false, "connecting…"); retry = 500; };
    ws.onmessage = (ev) => {
      const data = JSON.parse(ev.data);
      if (data.type === "typing") { typing.textContent = "typing…"; return; }
      if (data.type === "history") {  // always the first frame of a connection
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
      pending.clear();  // the server answers frames in order
      if (data.type === "reply") add("bot", data.text, data.buttons, data.sources);
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
