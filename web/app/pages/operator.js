// Operator view (administrators): the nodes of the hub with this tenant's
// connections and channels on each (GET /admin/nodes, /admin/connections,
// /admin/channels, refreshed every few seconds), the answering node's
// readiness and gauges (/readyz, /metrics), the email outbox with dead
// letters and retry, and a trigger's progress.
import { t } from "../i18n.js";
import { api } from "../live.js";
import { debounced, empty, errText, fmtAgo, fmtDateTime, h, pageHead, toast } from "../ui.js";

const EMAIL_STATUSES = ["dead", "pending", "sent", "cancelled"];
/** How often the cluster figures are read again. */
const REFRESH_MS = 5000;

/** Prometheus text → Map of `name{labels}` and bare `name` (summed) to values. */
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[3]);
    out.set(m[1] + (m[2] || ""), v);
    if (m[2]) out.set(m[1], (out.get(m[1]) || 0) + v);
  }
  return out;
}

export default {
  id: "operator",
  roles: ["admin"],
  render(root) {
    const error = h("p", { class: "form-error", role: "alert" });
    const node = h("div", { class: "stats", id: "ops-node" });
    const emailState = { status: "dead", cursor: null, items: [] };
    const emails = h("tbody", { id: "ops-emails" });
    const emailMore = h("button", { type: "button", class: "secondary small", hidden: true, onclick: () => loadEmails(true) }, t("common.more"));
    const tabs = h(
      "div",
      { class: "tabs", role: "group", "aria-label": t("ops.outbox") },
      EMAIL_STATUSES.map((s) =>
        h(
          "button",
          {
            type: "button",
            class: "tab",
            "data-status": s,
            "aria-pressed": String(s === emailState.status),
            onclick: () => {
              emailState.status = s;
              for (const b of tabs.children) b.setAttribute("aria-pressed", String(b.dataset.status === s));
              loadEmails(false);
            },
          },
          s === "dead" ? t("ops.dead") : t(`ops.status.${s}`),
        ),
      ),
    );

    const stat = (label, value, sub) =>
      h("div", { class: "stat" }, h("span", { class: "label" }, label), h("span", { class: "value" }, value), sub ? h("span", { class: "sub" }, sub) : null);

    const loadNode = async () => {
      try {
        const [ready, metrics] = await Promise.all([
          fetch("/readyz").then((r) => r.json()),
          fetch("/metrics").then((r) => (r.ok ? r.text() : "")),
        ]);
        const m = parseMetrics(metrics);
        const n = (k) => (m.has(k) ? String(m.get(k)) : "—");
        const version = [...m.keys()].find((k) => k.startsWith("relais_build_info{"))?.match(/version="([^"]*)"/)?.[1] ?? "—";
        const yes = (b) => (b ? t("ops.yes") : t("ops.no"));
        node.replaceChildren(
          stat(t("ops.node"), ready.ready ? t("ops.ready") : t("ops.notready"), `${t("ops.store")}: ${yes(ready.store)} · ${t("ops.bus")}: ${yes(ready.bus)} · ${t("ops.draining")}: ${yes(ready.draining)}`),
          stat(t("ops.version"), version),
          stat(t("ops.connections"), n("relais_connections"), `${t("ops.refused")}: ${n("relais_connections_refused_total")}`),
          stat(t("ops.subscriptions"), n("relais_subscriptions")),
          stat(t("ops.buscons"), n("relais_bus_connections")),
          stat(t("ops.publications"), n("relais_publications_total"), `${t("ops.deliveries")}: ${n("relais_deliveries_total")}`),
          stat(t("ops.slow"), n("relais_slow_consumer_closes_total")),
          stat(t("ops.backlog"), n('relais_email_outbox_backlog{state="due"}'), `${t("ops.triggers_backlog")}: ${n("relais_notification_triggers_backlog")}`),
        );
      } catch (e) {
        error.textContent = errText(e);
      }
    };


    // The nodes, this tenant's connections on them, and its channels.
    const nodesBody = h("tbody", { id: "ops-nodes" });
    const connStats = h("div", { class: "stats", id: "ops-connections" });
    const channelsBody = h("tbody", { id: "ops-channels" });
    const channelsNote = h("p", { class: "hint pad-x", id: "ops-channels-note", hidden: true }, t("ops.channels.truncated"));
    const prefix = h("input", { id: "ops-channel-prefix", type: "search", placeholder: "room:", spellcheck: "false", autocomplete: "off", maxlength: "200" });
    const share = (mine, all) => [String(mine), h("span", { class: "hint" }, ` / ${all}`)];
    const when = (ms) => h("time", { datetime: new Date(ms).toISOString(), title: fmtDateTime(ms) }, fmtAgo(ms));

    const loadCluster = async () => {
      try {
        const [{ nodes }, conns] = await Promise.all([api("GET", "/admin/nodes"), api("GET", "/admin/connections")]);
        const byNode = new Map(conns.nodes.map((c) => [c.id, c]));
        nodesBody.replaceChildren(
          ...(nodes.length
            ? nodes.map((n) => {
                const c = byNode.get(n.id) ?? { ws: 0, sse: 0 };
                return h(
                  "tr",
                  { "data-id": n.id },
                  h("th", { scope: "row" }, h("code", {}, n.id), n.local ? [" ", h("span", { class: "tag confirmed" }, t("ops.nodes.this"))] : null),
                  h("td", {}, n.version),
                  h("td", {}, when(n.started_at)),
                  h("td", {}, when(n.last_seen)),
                  h("td", {}, share(n.tenant.connections, n.connections), h("div", { class: "hint" }, `WebSocket ${c.ws} · SSE ${c.sse}`)),
                  h("td", {}, share(n.tenant.subscriptions, n.subscriptions)),
                  h("td", {}, share(n.tenant.channels, n.channels)),
                );
              })
            : [h("tr", {}, h("td", { colspan: 7 }, empty(t("ops.nodes.none"))))]),
        );
        const total = conns.total;
        connStats.replaceChildren(
          stat(t("ops.nodes.count"), String(nodes.length)),
          stat(t("ops.conns.total"), String(total.connections), `WebSocket ${total.ws} · SSE ${total.sse}`),
          stat(t("ops.conns.subscriptions"), String(total.subscriptions)),
        );
      } catch (e) {
        error.textContent = errText(e);
      }
    };

    let channelSeq = 0;
    const loadChannels = async () => {
      const mine = ++channelSeq;
      try {
        const query = { limit: 100 };
        if (prefix.value.trim()) query.prefix = prefix.value.trim();
        const page = await api("GET", "/admin/channels", { query });
        if (mine !== channelSeq) return;
        channelsNote.hidden = !page.truncated;
        channelsBody.replaceChildren(
          ...(page.channels.length
            ? page.channels.map((c) =>
                h(
                  "tr",
                  { "data-name": c.name },
                  h("th", { scope: "row" }, h("code", {}, c.name)),
                  h("td", {}, String(c.subscribers)),
                  h("td", {}, c.nodes.map((id) => [h("code", { class: "tag" }, id), " "])),
                ),
              )
            : [h("tr", {}, h("td", { colspan: 3 }, empty(t("ops.channels.none"))))]),
        );
      } catch (e) {
        if (mine === channelSeq) error.textContent = errText(e);
      }
    };
    prefix.addEventListener("input", debounced(loadChannels, 300));

    const retry = async (mail) => {
      try {
        await api("POST", `/admin/emails/${encodeURIComponent(mail.id)}/retry`);
        toast(t("ops.retried"));
        loadEmails(false);
      } catch (e) {
        toast(errText(e), "error");
      }
    };

    let seq = 0;
    const loadEmails = async (append) => {
      const mine = ++seq;
      try {
        const page = await api("GET", "/admin/emails", { query: { status: emailState.status, limit: 50, cursor: append ? emailState.cursor ?? undefined : undefined } });
        if (mine !== seq) return;
        emailState.items = append ? [...emailState.items, ...page.items] : page.items;
        emailState.cursor = page.next_cursor;
        emailMore.hidden = !page.next_cursor;
        emails.replaceChildren(
          ...(emailState.items.length
            ? emailState.items.map((m) =>
                h(
                  "tr",
                  { "data-id": m.id },
                  h("td", {}, m.to),
                  h("td", {}, m.subject, " ", h("span", { class: "tag" }, m.kind)),
                  h("td", {}, String(m.attempts ?? 0)),
                  h("td", { class: "hint" }, m.last_error || "—"),
                  h("td", {}, fmtDateTime(m.created_at)),
                  h("td", {}, m.status === "dead" ? h("button", { type: "button", class: "small", "aria-label": `${t("ops.retry")}: ${m.to}`, onclick: () => retry(m) }, t("ops.retry")) : h("span", { class: `tag ${m.status}` }, m.status)),
                ),
              )
            : [h("tr", {}, h("td", { colspan: 6 }, empty(t("ops.noemail"))))]),
        );
      } catch (e) {
        if (mine === seq) error.textContent = errText(e);
      }
    };

    const triggerOut = h("div", { id: "ops-trigger", "aria-live": "polite" });
    const triggerForm = h(
      "form",
      { class: "row", novalidate: true },
      h("label", { for: "trigger-id", class: "visually-hidden" }, t("ops.trigger.id")),
      h("input", { id: "trigger-id", placeholder: t("ops.trigger.id"), required: true, spellcheck: "false", autocomplete: "off" }),
      h("button", { type: "submit", class: "secondary" }, t("ops.trigger.find")),
    );
    triggerForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = triggerForm.querySelector("input");
      const id = input.value.trim();
      if (!id) {
        input.setAttribute("aria-invalid", "true");
        triggerOut.replaceChildren(h("p", { class: "form-error" }, t("common.required")));
        return;
      }
      input.setAttribute("aria-invalid", "false");
      try {
        const tr = await api("GET", `/notifications/${encodeURIComponent(id)}`);
        triggerOut.replaceChildren(
          h(
            "dl",
            { class: "facts" },
            Object.entries(tr).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, k.endsWith("_at") && v ? fmtDateTime(v) : typeof v === "object" ? JSON.stringify(v) : String(v))]),
          ),
        );
      } catch (e) {
        triggerOut.replaceChildren(h("p", { class: "form-error" }, errText(e)));
      }
    });

    root.append(
      pageHead(t("ops.title"), t("ops.lead"), h("button", { type: "button", class: "secondary", onclick: () => (refresh(), loadEmails(false)) }, t("ops.refresh"))),
      error,
      node,
      connStats,
      h(
        "section",
        { class: "card flush", "aria-labelledby": "ops-nodes-title" },
        h("div", { class: "toolbar pad" }, h("h2", { id: "ops-nodes-title" }, t("ops.nodes")), h("span", { class: "spacer" }), h("span", { class: "hint" }, t("ops.nodes.hint"))),
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "grid" },
            h("thead", {}, h("tr", {}, [t("ops.node"), t("ops.version"), t("ops.nodes.started"), t("ops.nodes.seen"), t("ops.connections"), t("ops.subscriptions"), t("ops.channels")].map((c) => h("th", { scope: "col" }, c)))),
            nodesBody,
          ),
        ),
      ),
      h(
        "section",
        { class: "card flush", "aria-labelledby": "ops-channels-title" },
        h(
          "div",
          { class: "toolbar pad" },
          h("h2", { id: "ops-channels-title" }, t("ops.channels")),
          h("span", { class: "spacer" }),
          h("label", { for: "ops-channel-prefix" }, t("ops.channels.filter")),
          prefix,
        ),
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "grid" },
            h("thead", {}, h("tr", {}, [t("ops.channel"), t("ops.channels.subscribers"), t("ops.channels.nodes")].map((c) => h("th", { scope: "col" }, c)))),
            channelsBody,
          ),
        ),
        channelsNote,
      ),
      h(
        "section",
        { class: "card flush", "aria-labelledby": "ops-outbox" },
        h("div", { class: "toolbar pad" }, h("h2", { id: "ops-outbox" }, t("ops.outbox")), h("span", { class: "spacer" }), tabs),
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "grid" },
            h("thead", {}, h("tr", {}, [t("ops.to"), t("ops.subject"), t("ops.attempts"), t("ops.lasterror"), t("ops.created"), ""].map((c) => h("th", { scope: "col" }, c)))),
            emails,
          ),
        ),
        h("div", { class: "row center" }, emailMore),
      ),
      h("section", { class: "card", "aria-labelledby": "ops-trigger-title" }, h("h2", { id: "ops-trigger-title" }, t("ops.trigger.lookup")), triggerForm, triggerOut),
    );
    const refresh = () => {
      loadNode();
      loadCluster();
      loadChannels();
    };
    refresh();
    loadEmails(false);
    const timer = setInterval(refresh, REFRESH_MS);
    return () => clearInterval(timer);
  },
};
