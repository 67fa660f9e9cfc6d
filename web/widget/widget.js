/*
 * Relais assistant widget: a chat with one of the hub's assistants, for the
 * visitors of a client's site. Embed it with
 *
 *   <script src="https://HUB/widget.js" data-key="pk_…" data-lang="fr" async></script>
 *
 * Plain JavaScript, no dependencies. It renders in a Shadow DOM (the page's
 * CSS cannot reach it), talks to the hub the script was loaded from
 * (`/api/v1/widget/*` over CORS, the answers over SSE), keeps the visitor's
 * token and conversation in localStorage per key so a reload resumes the
 * conversation, and exposes `window.RelaisWidget.open()` / `.close()`.
 *
 * Attributes of the script tag: `data-key` (required), `data-lang` (`fr` or
 * `en`; else the browser's language), `data-color` (a CSS color for the
 * launcher and the header), `data-position` (`right`, default, or `left`).
 */
(function () {
  "use strict";

  if (window.RelaisWidget && window.RelaisWidget.version) return; // loaded twice

  var script =
    document.currentScript ||
    (function () {
      var all = document.querySelectorAll("script[data-key][src]");
      for (var i = all.length - 1; i >= 0; i--) if (/\/widget\.js(\?|#|$)/.test(all[i].src)) return all[i];
      return null;
    })();
  if (!script) return;

  var KEY = script.getAttribute("data-key") || "";
  // The hub is wherever this script came from (a path prefix included).
  var HUB = script.src.replace(/\/widget\.js([?#].*)?$/, "");
  var COLOR = script.getAttribute("data-color") || "#4f46e5";
  var LEFT = script.getAttribute("data-position") === "left";
  var lang = (script.getAttribute("data-lang") || navigator.language || "en").toLowerCase().slice(0, 2) === "fr" ? "fr" : "en";

  var TEXT = {
    en: {
      open: "Open the chat",
      close: "Close the chat",
      title: "Assistant",
      subtitle: "Answers in a few seconds",
      greeting: "Hello! How can I help you?",
      placeholder: "Write your message…",
      send: "Send",
      stop: "Stop",
      you: "You",
      assistant: "Assistant",
      stopped: "Stopped",
      incomplete: "The answer was cut short. Please try again.",
      failed: "The assistant could not answer. Please try again.",
      answering: "The assistant is answering…",
      answered: "The assistant has answered.",
      left: function (n) {
        return n === 1 ? "1 message left" : n + " messages left";
      },
      connecting: "Connecting…",
      newSession: "Your previous session ended: this is a new conversation.",
      errors: {
        forbidden: "This chat is not allowed on this site.",
        too_many_visitors: "The chat is very busy right now. Please try again in a while.",
        visitor_message_limit: "You have sent the maximum number of messages for this conversation.",
        too_many_streams: "Please wait for the current answer to finish before asking again.",
        token_quota_exceeded: "The assistant has reached its limit for today. Please try again tomorrow.",
        not_found: "This chat is not available.",
        assistant_not_configured: "The assistant is not available at the moment.",
        invalid_request: "This message cannot be sent (it may be too long).",
        network: "Cannot reach the chat service. Check your connection and try again.",
        missing_key: "The chat is not set up on this page (no data-key).",
        generic: "Something went wrong. Please try again.",
      },
      powered: "Powered by Relais",
    },
    fr: {
      open: "Ouvrir la discussion",
      close: "Fermer la discussion",
      title: "Assistant",
      subtitle: "Répond en quelques secondes",
      greeting: "Bonjour ! Comment puis-je vous aider ?",
      placeholder: "Écrivez votre message…",
      send: "Envoyer",
      stop: "Arrêter",
      you: "Vous",
      assistant: "Assistant",
      stopped: "Arrêtée",
      incomplete: "La réponse a été interrompue. Veuillez réessayer.",
      failed: "L’assistant n’a pas pu répondre. Veuillez réessayer.",
      answering: "L’assistant répond…",
      answered: "L’assistant a répondu.",
      left: function (n) {
        return n <= 1 ? n + " message restant" : n + " messages restants";
      },
      connecting: "Connexion…",
      newSession: "Votre session précédente a pris fin : voici une nouvelle conversation.",
      errors: {
        forbidden: "Cette discussion n’est pas autorisée sur ce site.",
        too_many_visitors: "La discussion est très sollicitée en ce moment. Réessayez dans un moment.",
        visitor_message_limit: "Vous avez envoyé le nombre maximal de messages pour cette conversation.",
        too_many_streams: "Attendez la fin de la réponse en cours avant de poser une autre question.",
        token_quota_exceeded: "L’assistant a atteint sa limite du jour. Réessayez demain.",
        not_found: "Cette discussion n’est pas disponible.",
        assistant_not_configured: "L’assistant n’est pas disponible pour le moment.",
        invalid_request: "Ce message ne peut pas être envoyé (il est peut-être trop long).",
        network: "Impossible de joindre le service de discussion. Vérifiez votre connexion et réessayez.",
        missing_key: "La discussion n’est pas configurée sur cette page (data-key manquant).",
        generic: "Une erreur est survenue. Veuillez réessayer.",
      },
      powered: "Propulsé par Relais",
    },
  }[lang];

  // ---------------------------------------------------------------- storage

  var STORE = "relais-widget:" + KEY;
  function load() {
    try {
      return JSON.parse(localStorage.getItem(STORE) || "null");
    } catch (e) {
      return null;
    }
  }
  /** Saves the session and whether the panel is open; `forget` drops a refused session. */
  function save(forget) {
    try {
      if (session) localStorage.setItem(STORE, JSON.stringify({ session: session, open: isOpen }));
      else if (forget) localStorage.removeItem(STORE);
    } catch (e) {
      /* storage refused (private mode, sandbox): the chat still works for this page */
    }
  }
  function expired(s) {
    var exp = Number(s && s.expires_at) || 0;
    if (exp && exp < 1e12) exp *= 1000; // seconds
    return !s || !s.token || (exp && exp - 60000 < Date.now());
  }

  // ---------------------------------------------------------------- hub calls

  function HubError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message || code;
  }

  function call(method, path, body, token) {
    var headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (token) headers.authorization = "Bearer " + token;
    return fetch(HUB + "/api/v1" + path, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      mode: "cors",
    }).then(
      function (res) {
        return res.text().then(function (text) {
          var json = null;
          try {
            json = text ? JSON.parse(text) : null;
          } catch (e) {
            /* not JSON */
          }
          if (!res.ok) {
            var err = (json && json.error) || {};
            throw new HubError(res.status, err.code || (res.status === 401 ? "unauthenticated" : "http_" + res.status), err.message);
          }
          return json;
        });
      },
      function () {
        throw new HubError(0, "network");
      },
    );
  }

  function errorText(e) {
    var code = e && e.code;
    return TEXT.errors[code] || (e && e.status === 0 ? TEXT.errors.network : TEXT.errors.generic);
  }

  // ---------------------------------------------------------------- state

  var session = null; // {token, expires_at, conversation, channel, assistant, messages_left}
  var messages = []; // ordered by seq
  var byId = {};
  var isOpen = false;
  var started = null; // the promise of the session start
  var source = null; // EventSource
  var lastEventId = "";
  var retry = 0;
  var retryTimer = 0;
  var fatal = false; // an error no retry fixes (origin refused, unknown key)

  function streamingRun() {
    for (var i = messages.length - 1; i >= 0; i--) if (messages[i].role === "assistant" && messages[i].status === "streaming") return messages[i];
    return null;
  }

  /** Adds or updates a message; a final message is never taken back to streaming. */
  function upsert(m) {
    if (!m || !m.id) return;
    var cur = byId[m.id];
    if (!cur) {
      cur = byId[m.id] = {
        id: m.id,
        role: m.role,
        seq: m.seq || 0,
        content: "",
        status: "complete",
        delta_seq: 0,
      };
      messages.push(cur);
      messages.sort(function (a, b) {
        return a.seq - b.seq;
      });
    } else if (cur.status !== "streaming" && m.status === "streaming") {
      return;
    } else if (m.status === "streaming" && cur.status === "streaming" && (m.delta_seq || 0) < cur.delta_seq) {
      return; // older than what we have
    }
    if (m.role) cur.role = m.role;
    if (m.seq) cur.seq = m.seq;
    if (typeof m.content === "string") cur.content = m.content;
    if (m.status) cur.status = m.status;
    if (typeof m.delta_seq === "number") cur.delta_seq = m.delta_seq;
    cur.error = m.error || null;
    draw(cur);
  }

  function reset() {
    messages = [];
    byId = {};
    list.replaceChildren();
  }

  // ---------------------------------------------------------------- session

  function ensureSession() {
    if (started) return started;
    if (!KEY) {
      fatal = true;
      showError(TEXT.errors.missing_key);
      return Promise.reject(new HubError(0, "missing_key"));
    }
    setBusy(true);
    var stored = session || (load() || {}).session;
    var first;
    if (stored && !expired(stored)) {
      session = stored;
      first = history().catch(function (e) {
        if (e.status === 401 || e.code === "not_found") return newSession(true);
        throw e;
      });
    } else {
      first = newSession(!!stored);
    }
    started = first.then(
      function () {
        setBusy(false);
        connect();
      },
      function (e) {
        setBusy(false);
        started = null;
        if (e.code === "forbidden" || e.code === "not_found" || e.code === "missing_key") fatal = true;
        showError(errorText(e));
        throw e;
      },
    );
    return started;
  }

  function newSession(replacing) {
    closeStream();
    session = null;
    save(true);
    reset();
    return call("POST", "/widget/sessions", { key: KEY }).then(function (r) {
      session = {
        token: r.token,
        expires_at: r.expires_at,
        conversation: r.conversation && r.conversation.id,
        channel: r.channel,
        assistant: (r.assistant && r.assistant.name) || "",
        messages_left: r.messages_left,
      };
      lastEventId = "";
      save();
      setTitle();
      if (replacing) showNotice(TEXT.newSession);
      return history();
    });
  }

  function history() {
    return call("GET", "/widget/messages", undefined, session.token).then(function (r) {
      setTitle();
      (r.messages || []).forEach(upsert);
      render();
    });
  }

  /** After the token was refused: a new session, a new conversation. */
  function renew() {
    started = null;
    closeStream();
    session = null;
    save(true);
    return ensureSession();
  }

  // ---------------------------------------------------------------- the stream

  function closeStream() {
    clearTimeout(retryTimer);
    if (source) {
      source.close();
      source = null;
    }
  }

  function connect() {
    closeStream();
    if (!session) return;
    var url = HUB + "/api/v1/sse?channels=" + encodeURIComponent(session.channel) + "&access_token=" + encodeURIComponent(session.token);
    if (lastEventId) url += "&last_event_id=" + encodeURIComponent(lastEventId);
    var es = (source = new EventSource(url));
    function track(ev) {
      if (ev.lastEventId) lastEventId = ev.lastEventId;
    }
    es.addEventListener("subscribed", function (ev) {
      track(ev);
      retry = 0;
      var f = parse(ev.data);
      if (f && f.snapshot && Array.isArray(f.snapshot.messages)) f.snapshot.messages.forEach(upsert);
      render();
    });
    es.addEventListener("pub", function (ev) {
      track(ev);
      var f = parse(ev.data);
      if (f && f.data) apply(f.data);
    });
    es.addEventListener("unsubscribed", function () {
      reconnectSoon();
    });
    es.addEventListener("close", function () {
      // The hub ended the stream (the token expired, the session ended…).
      reconnectSoon();
    });
    es.onerror = function () {
      // CONNECTING: the browser reconnects by itself with Last-Event-ID.
      if (es.readyState === EventSource.CLOSED) reconnectSoon();
    };
  }

  /** Reconnects after a pause, first checking that the token still works. */
  function reconnectSoon() {
    closeStream();
    if (!session) return;
    var delay = Math.min(30000, 1000 * Math.pow(2, retry)) * (0.5 + Math.random());
    retry++;
    retryTimer = setTimeout(function () {
      history().then(connect, function (e) {
        if (e.status === 401 || e.code === "not_found") renew().catch(function () {});
        else if (e.code === "forbidden") {
          fatal = true;
          showError(errorText(e));
        } else reconnectSoon();
      });
    }, delay);
  }

  function parse(s) {
    try {
      return JSON.parse(s);
    } catch (e) {
      return null;
    }
  }

  function apply(d) {
    var m;
    switch (d.type) {
      case "assistant.message":
      case "assistant.started":
        upsert(d.message);
        break;
      case "assistant.delta":
        m = byId[d.message];
        // Only the next frame: an older one is already in the text (resume rule).
        if (m && m.status === "streaming" && d.seq === m.delta_seq + 1) {
          m.content += d.text || "";
          m.delta_seq = d.seq;
          draw(m);
        }
        break;
      case "assistant.done":
        m = byId[d.message];
        if (m) {
          m.status = d.status || (d.incomplete ? "incomplete" : "complete");
          if (typeof d.content === "string") m.content = d.content;
          m.error = d.error || null;
          draw(m);
        }
        break;
    }
    render();
  }

  // ---------------------------------------------------------------- actions

  function send(text) {
    clearError();
    return ensureSession()
      .then(function () {
        return call("POST", "/widget/messages", { text: text }, session.token).catch(function (e) {
          if (e.status !== 401) throw e;
          return renew().then(function () {
            return call("POST", "/widget/messages", { text: text }, session.token);
          });
        });
      })
      .then(function (r) {
        upsert(r.message);
        upsert(r.reply);
        if (typeof r.messages_left === "number") {
          session.messages_left = r.messages_left;
          save();
          setTitle();
        }
        render();
      });
  }

  function stop() {
    var run = streamingRun();
    if (!run || !session) return;
    stopButton.disabled = true;
    call("POST", "/widget/runs/" + encodeURIComponent(run.id) + "/cancel", {}, session.token).then(
      function () {},
      function (e) {
        stopButton.disabled = false;
        if (e.code !== "not_running") showError(errorText(e));
      },
    );
  }

  // ---------------------------------------------------------------- the DOM

  var CSS =
    ":host{all:initial}" +
    "*{box-sizing:border-box}" +
    ".root{--c:" + COLOR + ";font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;color:#1f2330;-webkit-font-smoothing:antialiased}" +
    ".launcher{position:fixed;bottom:20px;" + (LEFT ? "left" : "right") + ":20px;z-index:2147483000;width:60px;height:60px;border-radius:50%;border:0;padding:0;cursor:pointer;background:var(--c);color:#fff;box-shadow:0 6px 20px rgba(17,24,39,.25),0 2px 6px rgba(17,24,39,.15);display:flex;align-items:center;justify-content:center;transition:transform .18s ease,box-shadow .18s ease}" +
    ".launcher:hover{transform:scale(1.06);box-shadow:0 10px 28px rgba(17,24,39,.3)}" +
    ".launcher:focus-visible,button:focus-visible,textarea:focus-visible{outline:3px solid #93c5fd;outline-offset:2px}" +
    ".launcher svg{width:28px;height:28px}" +
    ".launcher .i-close{display:none}.launcher[aria-expanded=true] .i-chat{display:none}.launcher[aria-expanded=true] .i-close{display:block}" +
    ".panel{position:fixed;bottom:92px;" + (LEFT ? "left" : "right") + ":20px;z-index:2147483001;width:380px;height:min(620px,calc(100vh - 112px));display:flex;flex-direction:column;background:#fff;border-radius:16px;overflow:hidden;box-shadow:0 18px 50px rgba(17,24,39,.28),0 4px 12px rgba(17,24,39,.12);transform-origin:bottom " + (LEFT ? "left" : "right") + ";animation:pop .18s ease-out}" +
    ".panel[hidden]{display:none}" +
    "@keyframes pop{from{opacity:0;transform:translateY(12px) scale(.98)}to{opacity:1;transform:none}}" +
    "header{display:flex;align-items:center;gap:12px;padding:16px 16px 16px 18px;background:var(--c);background-image:linear-gradient(135deg,rgba(255,255,255,.16),rgba(0,0,0,.08));color:#fff}" +
    ".avatar{flex:none;width:38px;height:38px;border-radius:50%;background:rgba(255,255,255,.22);display:flex;align-items:center;justify-content:center;font-weight:600;font-size:16px}" +
    ".heading{flex:1;min-width:0}" +
    "h2{margin:0;font-size:16px;font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}" +
    ".sub{font-size:12px;opacity:.85;display:flex;align-items:center;gap:6px}" +
    ".off .sub{visibility:hidden}.dot{width:7px;height:7px;border-radius:50%;background:#4ade80;box-shadow:0 0 0 2px rgba(255,255,255,.3)}" +
    ".icon-btn{flex:none;width:34px;height:34px;border-radius:8px;border:0;background:transparent;color:inherit;cursor:pointer;display:flex;align-items:center;justify-content:center}" +
    ".icon-btn:hover{background:rgba(255,255,255,.18)}" +
    ".icon-btn svg{width:20px;height:20px}" +
    ".log{flex:1;overflow-y:auto;margin:0;padding:18px 14px 8px;list-style:none;background:#f7f8fb;display:flex;flex-direction:column;gap:10px;overscroll-behavior:contain}" +
    ".msg{display:flex;flex-direction:column;max-width:85%}" +
    ".msg.user{align-self:flex-end;align-items:flex-end}" +
    ".msg.assistant{align-self:flex-start;align-items:flex-start}" +
    ".bubble[hidden]{display:none}.bubble{padding:9px 13px;border-radius:16px;white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word}" +
    ".user .bubble{background:var(--c);color:#fff;border-bottom-right-radius:5px}" +
    ".assistant .bubble{background:#fff;color:#1f2330;border:1px solid #e6e8ef;border-bottom-left-radius:5px;box-shadow:0 1px 2px rgba(17,24,39,.04)}" +
    ".note{font-size:12px;color:#6b7280;margin:3px 4px 0}" +
    ".note.bad{color:#b42318}" +
    ".typing{display:inline-flex;gap:4px;padding:4px 0}" +
    ".typing i{width:7px;height:7px;border-radius:50%;background:#9aa1b2;animation:blink 1.2s infinite ease-in-out}" +
    ".typing i:nth-child(2){animation-delay:.2s}.typing i:nth-child(3){animation-delay:.4s}" +
    "@keyframes blink{0%,80%,100%{opacity:.3;transform:translateY(0)}40%{opacity:1;transform:translateY(-3px)}}" +
    ".caret::after{content:'';display:inline-block;width:7px;height:14px;margin-left:2px;vertical-align:-2px;background:#9aa1b2;border-radius:1px;animation:blink 1s infinite}" +
    ".greeting{align-self:flex-start;max-width:85%}" +
    ".banner{margin:0;padding:10px 14px;font-size:13px;border-top:1px solid #fde2e1;background:#fef3f2;color:#b42318}" +
    ".banner.info{background:#eff6ff;color:#1e40af;border-top-color:#dbeafe}" +
    ".banner[hidden]{display:none}" +
    "form{display:flex;align-items:flex-end;gap:8px;padding:10px 12px 8px;border-top:1px solid #eceef3;background:#fff}" +
    "textarea{flex:1;resize:none;border:1px solid #d9dce5;border-radius:12px;padding:9px 12px;font:inherit;color:inherit;background:#fff;max-height:120px;min-height:40px;line-height:1.4}" +
    "textarea:focus{border-color:var(--c)}" +
    "textarea:disabled{background:#f3f4f6}" +
    ".send,.stop{flex:none;height:40px;border-radius:12px;border:0;cursor:pointer;font:inherit;font-weight:600;display:flex;align-items:center;justify-content:center;gap:6px}" +
    ".send{width:40px;background:var(--c);color:#fff}" +
    ".send:disabled{opacity:.45;cursor:default}" +
    ".send svg{width:18px;height:18px}" +
    ".stop{padding:0 12px;background:#fff;color:#1f2330;border:1px solid #d9dce5}" +
    ".stop:hover{background:#f3f4f6}" +
    ".stop svg{width:12px;height:12px}" +
    ".stop[hidden],.send[hidden]{display:none}" +
    ".foot{display:flex;justify-content:space-between;padding:0 14px 10px;font-size:11px;color:#9aa1b2;background:#fff}" +
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}" +
    "@media (max-width:480px){.panel{inset:0;width:auto;height:auto;border-radius:0;animation:none}.root.open .launcher{display:none}}" +
    "@media (prefers-reduced-motion:reduce){.panel,.typing i,.caret::after{animation:none}.launcher{transition:none}}";

  var ICON_CHAT = '<svg class="i-chat" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M21 12a8 8 0 0 1-11.6 7.1L4 20.5l1.4-5A8 8 0 1 1 21 12z"/></svg>';
  var ICON_CLOSE = '<svg class="i-close" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linecap="round" aria-hidden="true"><path d="M6 6l12 12M18 6L6 18"/></svg>';
  var ICON_SEND = '<svg viewBox="0 0 24 24" fill="currentColor" aria-hidden="true"><path d="M3.4 20.4 21 12 3.4 3.6l-.01 6.53L15 12 3.39 13.87z"/></svg>';
  var ICON_STOP = '<svg viewBox="0 0 12 12" fill="currentColor" aria-hidden="true"><rect width="12" height="12" rx="2"/></svg>';
  var ICON_MIN = '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linecap="round" aria-hidden="true"><path d="M6 9l6 6 6-6"/></svg>';

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs)
      Object.keys(attrs).forEach(function (k) {
        if (k === "text") e.textContent = attrs[k];
        else if (k === "html") e.innerHTML = attrs[k]; // our own icons only
        else e.setAttribute(k, attrs[k]);
      });
    (children || []).forEach(function (c) {
      if (c) e.appendChild(c);
    });
    return e;
  }

  var host = document.createElement("relais-widget");
  host.setAttribute("style", "all:initial!important;position:static!important;display:block!important");
  var shadow = host.attachShadow({ mode: "open" });

  var launcher = el("button", { type: "button", class: "launcher", "aria-label": TEXT.open, "aria-expanded": "false", "aria-controls": "rw-panel", html: ICON_CHAT + ICON_CLOSE });
  var title = el("h2", { id: "rw-title", text: TEXT.title });
  var avatar = el("div", { class: "avatar", "aria-hidden": "true", text: "A" });
  var closeButton = el("button", { type: "button", class: "icon-btn", id: "rw-close", "aria-label": TEXT.close, html: ICON_MIN });
  var header = el("header", {}, [avatar, el("div", { class: "heading" }, [title, el("div", { class: "sub" }, [el("span", { class: "dot", "aria-hidden": "true" }), el("span", { text: TEXT.subtitle })])]), closeButton]);
  var list = el("ol", { class: "log", id: "rw-messages", role: "log", "aria-live": "polite", "aria-busy": "false", "aria-labelledby": "rw-title", tabindex: "0" });
  var greeting = el("li", { class: "msg assistant greeting" }, [el("div", { class: "bubble", text: TEXT.greeting })]);
  var status = el("p", { class: "sr", role: "status", id: "rw-status" });
  var banner = el("p", { class: "banner", id: "rw-error", role: "alert", hidden: "" });
  var input = el("textarea", { id: "rw-input", rows: "1", maxlength: "16000", placeholder: TEXT.placeholder, "aria-label": TEXT.placeholder });
  var sendButton = el("button", { type: "submit", class: "send", id: "rw-send", "aria-label": TEXT.send, title: TEXT.send, html: ICON_SEND });
  var stopButton = el("button", { type: "button", class: "stop", id: "rw-stop", hidden: "" });
  stopButton.innerHTML = ICON_STOP;
  stopButton.appendChild(document.createTextNode(TEXT.stop));
  var form = el("form", { novalidate: "" }, [input, stopButton, sendButton]);
  var left = el("span", { id: "rw-left" });
  var foot = el("div", { class: "foot" }, [el("span", { text: TEXT.powered }), left]);
  var panel = el("div", { class: "panel", id: "rw-panel", role: "dialog", "aria-labelledby": "rw-title", hidden: "" }, [header, list, banner, form, foot, status]);
  var root = el("div", { class: "root", lang: lang }, [panel, launcher]);
  var style = el("style", { text: CSS });
  shadow.appendChild(style);
  shadow.appendChild(root);

  function setTitle() {
    var name = (session && session.assistant) || TEXT.title;
    title.textContent = name;
    avatar.textContent = name.trim().charAt(0).toUpperCase() || "A";
    var n = session && session.messages_left;
    left.textContent = typeof n === "number" && n <= 5 ? TEXT.left(Math.max(0, n)) : "";
  }

  var nodes = {};
  function draw(m) {
    var node = nodes[m.id];
    if (!node) {
      node = nodes[m.id] = { li: el("li", { class: "msg " + (m.role === "user" ? "user" : "assistant") }), who: el("span", { class: "sr" }), bubble: el("div", { class: "bubble text" }), note: el("p", { class: "note" }) };
      node.li.appendChild(node.who);
      node.li.appendChild(node.bubble);
      node.li.appendChild(node.note);
    }
    node.li.setAttribute("data-id", m.id);
    node.li.setAttribute("data-status", m.status);
    node.who.textContent = (m.role === "user" ? TEXT.you : (session && session.assistant) || TEXT.assistant) + ": ";
    var waiting = m.status === "streaming" && !m.content;
    if (waiting) {
      node.bubble.replaceChildren(el("span", { class: "typing", "aria-hidden": "true" }, [el("i"), el("i"), el("i")]));
    } else if (node.bubble.textContent !== m.content || node.bubble.firstElementChild) {
      node.bubble.textContent = m.content;
    }
    node.bubble.classList.toggle("caret", m.status === "streaming" && !!m.content);
    node.bubble.hidden = !m.content && m.status !== "streaming";
    node.note.className = "note" + (m.status === "incomplete" ? " bad" : "");
    // The provider's error stays out of the visitor's sight (it is in data-error).
    node.note.textContent = m.status === "cancelled" ? TEXT.stopped : m.status === "incomplete" ? (m.content ? TEXT.incomplete : TEXT.failed) : "";
    if (m.error) node.li.setAttribute("data-error", m.error);
    node.note.hidden = !node.note.textContent;
    follow();
  }

  var wasStreaming = false;
  function render() {
    var want = [greeting];
    messages.forEach(function (m) {
      if (m.role === "assistant" && !m.content && m.status !== "streaming" && m.status !== "cancelled" && m.status !== "incomplete") return;
      draw(m);
      want.push(nodes[m.id].li);
    });
    var atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    var same = want.length === list.children.length && want.every(function (n, i) { return list.children[i] === n; });
    if (!same) list.replaceChildren.apply(list, want);
    var run = streamingRun();
    var streaming = !!run;
    list.setAttribute("aria-busy", String(streaming));
    stopButton.hidden = !streaming;
    if (!streaming) stopButton.disabled = false;
    sendButton.hidden = streaming;
    if (streaming !== wasStreaming) status.textContent = streaming ? TEXT.answering : TEXT.answered;
    wasStreaming = streaming;
    if (atBottom || !same) list.scrollTop = list.scrollHeight;
    if (streaming && shadow.activeElement === sendButton) stopButton.focus();
  }
  // Keep the view at the bottom while an answer grows.
  var scrolling = false;
  function follow() {
    if (scrolling) return;
    scrolling = true;
    requestAnimationFrame(function () {
      scrolling = false;
      if (list.scrollHeight - list.scrollTop - list.clientHeight < 120) list.scrollTop = list.scrollHeight;
    });
  }

  function setBusy(busy) {
    root.classList.toggle("busy", busy);
    if (busy) status.textContent = TEXT.connecting;
  }
  function showError(text) {
    banner.className = "banner";
    banner.textContent = text;
    banner.hidden = false;
    input.disabled = fatal;
    sendButton.disabled = fatal;
    root.classList.toggle("off", fatal);
  }
  function showNotice(text) {
    banner.className = "banner info";
    banner.textContent = text;
    banner.hidden = false;
  }
  function clearError() {
    if (!fatal) {
      banner.hidden = true;
      banner.textContent = "";
    }
  }

  function grow() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 120) + "px";
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = input.value.trim();
    if (!text || fatal || streamingRun()) return;
    input.value = "";
    grow();
    sendButton.disabled = true;
    send(text).then(
      function () {
        sendButton.disabled = false;
      },
      function (e) {
        sendButton.disabled = fatal;
        if (!input.value) input.value = text;
        grow();
        showError(errorText(e));
      },
    );
  });
  input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit", { cancelable: true }));
    }
  });
  input.addEventListener("input", grow);
  stopButton.addEventListener("click", stop);
  launcher.addEventListener("click", function () {
    isOpen ? close() : open();
  });
  closeButton.addEventListener("click", function () {
    close();
  });
  root.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape" && isOpen) {
      ev.stopPropagation();
      close();
    }
  });

  function open(opts) {
    if (!isOpen) {
      isOpen = true;
      panel.hidden = false;
      root.classList.add("open");
      launcher.setAttribute("aria-expanded", "true");
      launcher.setAttribute("aria-label", TEXT.close);
      save();
      render();
      list.scrollTop = list.scrollHeight;
    }
    if (!(opts && opts.quiet)) input.focus();
    ensureSession().catch(function () {});
  }
  function close() {
    if (!isOpen) return;
    var inside = !!shadow.activeElement;
    isOpen = false;
    panel.hidden = true;
    root.classList.remove("open");
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", TEXT.open);
    save();
    if (inside) launcher.focus();
  }

  function mount() {
    document.body.appendChild(host);
    var stored = load();
    if (stored && stored.session) {
      session = stored.session; // checked when the panel opens
      setTitle();
    }
    // Reopen after a reload if the visitor left it open.
    if (stored && stored.open) open({ quiet: true });
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);

  window.RelaisWidget = {
    version: 1,
    open: function () {
      open();
    },
    close: close,
    toggle: function () {
      isOpen ? close() : open();
    },
  };
})();
