// The iasql console: one page, no build step. Talks to /run (see README, "The web console").
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const sqlBox = $("sql"), runBtn = $("run"), cancelBtn = $("cancel"), statusEl = $("status");
  const results = $("results"), notices = $("notices"), noticeList = $("notice-list"), dbInput = $("database");
  let ws = null, wsDatabase = null, running = false, script = "", sections = new Map(), queued = null;

  dbInput.value = new URLSearchParams(location.search).get("database") || "";

  function setStatus(text) { statusEl.textContent = text; }
  function setRunning(on) {
    running = on;
    runBtn.disabled = on;
    cancelBtn.disabled = !on;
    document.body.dataset.running = on ? "1" : "0";
  }

  function connect(database) {
    const query = database ? "?database=" + encodeURIComponent(database) : "";
    const sock = new WebSocket("wss://" + location.host + "/run" + query);
    wsDatabase = database;
    setStatus("connecting...");
    sock.onopen = () => {
      setStatus("connected" + (database ? " to " + database : ""));
      if (queued) { sock.send(queued); queued = null; }
    };
    sock.onmessage = (ev) => handle(JSON.parse(ev.data));
    sock.onclose = (ev) => {
      if (ws === sock) { ws = null; }
      setStatus("disconnected" + (ev.reason ? ": " + ev.reason : ev.code !== 1000 ? " (" + ev.code + ")" : ""));
      if (running) { setRunning(false); }
    };
    return sock;
  }

  function run() {
    if (running) { return; }
    script = sqlBox.value;
    const database = dbInput.value.trim();
    results.replaceChildren();
    noticeList.replaceChildren();
    notices.hidden = true;
    sections = new Map();
    setRunning(true);
    const msg = JSON.stringify(database ? { sql: script, database: database } : { sql: script });
    if (!ws || ws.readyState > 1 || wsDatabase !== database) {
      if (ws) { ws.close(); }
      queued = msg;
      ws = connect(database);
    } else if (ws.readyState === 0) {
      queued = msg;
    } else {
      ws.send(msg);
    }
  }

  function section(m) {
    let s = sections.get(m.statement);
    if (!s) {
      s = document.createElement("div");
      s.className = "result";
      s.dataset.statement = m.statement;
      const h = document.createElement("h2");
      h.textContent = "Statement " + (m.statement + 1) + " ";
      const code = document.createElement("code");
      code.textContent = m.text.length > 120 ? m.text.slice(0, 117) + "..." : m.text;
      h.appendChild(code);
      s.appendChild(h);
      results.appendChild(s);
      sections.set(m.statement, s);
    }
    return s;
  }

  function addRows(s, m) {
    let table = s.querySelector("table");
    if (!table) {
      table = document.createElement("table");
      const tr = document.createElement("tr");
      for (const c of m.columns) { const th = document.createElement("th"); th.textContent = c; tr.appendChild(th); }
      const thead = document.createElement("thead");
      thead.appendChild(tr);
      table.appendChild(thead);
      table.appendChild(document.createElement("tbody"));
      s.appendChild(table);
    }
    const body = table.tBodies[0], frag = document.createDocumentFragment();
    for (const row of m.rows) {
      const tr = document.createElement("tr");
      for (const v of row) {
        const td = document.createElement("td");
        if (v === null) { td.textContent = "NULL"; td.className = "null"; } else { td.textContent = v; }
        tr.appendChild(td);
      }
      frag.appendChild(tr);
    }
    body.appendChild(frag);
  }

  function showError(s, m) {
    const e = m.error;
    s.classList.add("error");
    const p = document.createElement("div");
    p.className = "message";
    p.textContent = "ERROR " + (e.sqlstate || "") + ": " + (e.message || "");
    s.appendChild(p);
    for (const [label, v] of [["DETAIL", e.detail], ["HINT", e.hint]]) {
      if (v) { const d = document.createElement("div"); d.textContent = label + ": " + v; s.appendChild(d); }
    }
    if (m.text !== undefined) {
      const pre = document.createElement("pre");
      const text = m.text;
      if (e.position) {
        // Postgres counts characters of the statement from 1; the statement starts at m.start in the script
        const at = Math.min(e.position - 1, text.length);
        const end = wordEnd(text, at);
        const mark = document.createElement("mark");
        mark.className = "error-pos";
        mark.textContent = text.slice(at, end) || " ";
        pre.append(text.slice(0, at), mark, text.slice(end));
        sqlBox.focus();
        sqlBox.setSelectionRange(m.start + at, m.start + end);
      } else {
        pre.textContent = text;
      }
      s.appendChild(pre);
    }
  }

  function wordEnd(text, at) {
    let i = at;
    while (i < text.length && /[\w$."]/.test(text[i])) { i++; }
    return i > at ? i : Math.min(at + 1, text.length);
  }

  function handle(m) {
    if (m.done) { setRunning(false); setStatus("done"); return; }
    if (m.notice !== undefined) {
      notices.hidden = false;
      const li = document.createElement("li");
      li.textContent = (m.severity || "NOTICE") + ": " + m.notice;
      noticeList.appendChild(li);
      noticeList.scrollTop = noticeList.scrollHeight;
      return;
    }
    if (m.notification) {
      notices.hidden = false;
      const li = document.createElement("li");
      li.textContent = "NOTIFY " + m.notification.channel + ": " + m.notification.payload;
      noticeList.appendChild(li);
      return;
    }
    if (m.statement === undefined) {  // an error of the endpoint, not of a statement
      if (m.error) {
        const s = document.createElement("div");
        s.className = "result";
        results.appendChild(s);
        showError(s, m);
      }
      return;
    }
    const s = section(m);
    if (m.columns && m.rows) { addRows(s, m); }
    if (m.error) { showError(s, m); }
    if (m.command !== undefined) {
      const c = document.createElement("div");
      c.className = "command";
      c.textContent = m.command;
      s.appendChild(c);
      s.dataset.done = "1";
    }
    setStatus("running statement " + (m.statement + 1));
  }

  runBtn.addEventListener("click", run);
  cancelBtn.addEventListener("click", () => {
    if (ws && running) { ws.send(JSON.stringify({ cancel: true })); setStatus("cancelling..."); }
  });
  $("clear").addEventListener("click", () => { results.replaceChildren(); noticeList.replaceChildren(); notices.hidden = true; });
  sqlBox.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); run(); }
  });
  setRunning(false);
})();
