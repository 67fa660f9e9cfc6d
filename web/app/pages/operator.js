// Operator view (administrators): what the hub exposes today — this node's
// readiness and gauges (/readyz, /metrics), the email outbox with dead
// letters and retry, and a trigger's progress. The hub has no API listing
// the nodes of a cluster, their connections or the channels in use: the
// figures shown are the answering node's.
import { t } from "../i18n.js";
import { api } from "../live.js";
import { empty, errText, fmtDateTime, h, pageHead, toast } from "../ui.js";

const EMAIL_STATUSES = ["dead", "pending", "sent", "cancelled"];

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
      pageHead(t("ops.title"), t("ops.lead"), h("button", { type: "button", class: "secondary", onclick: () => (loadNode(), loadEmails(false)) }, t("ops.refresh"))),
      error,
      node,
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
    loadNode();
    loadEmails(false);
    const timer = setInterval(loadNode, 5000);
    return () => clearInterval(timer);
  },
};
