// The inbox: filters (status, category, priority), mark read / unread,
// archive / restore, mark all read. The list is a REST page of the chosen
// filter, fetched again when the live inbox (the bell's) changes.
import { t } from "../i18n.js";
import { api, live } from "../live.js";
import { debounced, empty, errText, fmtAgo, fmtDateTime, h, pageHead, toast } from "../ui.js";

const STATUSES = ["active", "unread", "read", "archived"];

export default {
  id: "inbox",
  render(root) {
    const state = { status: "active", category: "", priority: "", items: [], cursor: null };
    const counts = h("p", { class: "hint", id: "inbox-counts", "aria-live": "polite" });
    const list = h("ul", { class: "list", id: "inbox-list", "aria-label": t("inbox.title") });
    const more = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => load(true) }, t("common.more"));
    const error = h("p", { class: "form-error", role: "alert" });

    const tabs = h(
      "div",
      { class: "tabs", role: "group", "aria-label": t("inbox.status") },
      STATUSES.map((s) =>
        h(
          "button",
          {
            type: "button",
            class: "tab",
            "data-status": s,
            "aria-pressed": String(s === state.status),
            onclick: () => {
              state.status = s;
              for (const b of tabs.children) b.setAttribute("aria-pressed", String(b.dataset.status === s));
              load(false);
            },
          },
          t(`inbox.status.${s}`),
        ),
      ),
    );
    const category = h(
      "select",
      { id: "inbox-category", onchange: (ev) => ((state.category = ev.target.value), load(false)) },
      h("option", { value: "" }, t("common.all")),
    );
    const priority = h(
      "select",
      { id: "inbox-priority", onchange: (ev) => ((state.priority = ev.target.value), load(false)) },
      h("option", { value: "" }, t("common.all")),
      h("option", { value: "high,critical" }, t("inbox.priority.urgent")),
    );

    const act = async (item, action) => {
      try {
        await live.inbox.act(item.id, action);
        await load(false);
      } catch (e) {
        toast(errText(e), "error");
      }
    };

    const row = (i) => {
      const actions = [];
      if (i.status === "unread") actions.push(["read", t("inbox.read")]);
      if (i.status === "read") actions.push(["unread", t("inbox.unread")]);
      if (i.status !== "archived") actions.push(["archive", t("inbox.archive")]);
      else actions.push(["unarchive", t("inbox.unarchive")]);
      return h(
        "li",
        { class: `item notif ${i.status} prio-${i.priority}`, "data-id": i.id },
        h("span", { class: "dot", "aria-hidden": "true" }),
        h(
          "div",
          { class: "item-main" },
          h(
            "div",
            { class: "item-title" },
            h("strong", {}, i.title),
            h("span", { class: "tag" }, t(`cat.${i.category}`, {}, i.category)),
            i.priority === "high" || i.priority === "critical" ? h("span", { class: `tag ${i.priority}` }, i.priority) : null,
          ),
          i.body ? h("p", { class: "item-body" }, i.body) : null,
          h(
            "div",
            { class: "item-meta" },
            h("time", { datetime: new Date(i.created_at).toISOString(), title: fmtDateTime(i.created_at) }, fmtAgo(i.created_at)),
            i.url && /^(https?:\/\/|\/|#)/.test(i.url) ? h("a", { href: i.url }, t("inbox.open")) : null,
          ),
        ),
        h(
          "div",
          { class: "item-actions" },
          actions.map(([a, label]) =>
            h("button", { type: "button", class: "small secondary", "data-action": a, "aria-label": `${label}: ${i.title}`, onclick: () => act(i, a) }, label),
          ),
        ),
      );
    };

    const renderList = () => {
      list.replaceChildren(...(state.items.length ? state.items.map(row) : [h("li", {}, empty(t("inbox.empty")))]));
      more.hidden = !state.cursor;
    };

    const renderCounts = () => {
      const c = live.inbox?.counts;
      if (!c) return;
      counts.textContent = t("inbox.counts", c);
      const have = new Set([...category.options].map((o) => o.value));
      for (const cat of Object.keys(c.categories || {}).sort()) {
        if (!have.has(cat)) category.append(h("option", { value: cat }, t(`cat.${cat}`, {}, cat)));
      }
    };

    let seq = 0;
    const load = async (append) => {
      const mine = ++seq;
      error.textContent = "";
      const query = { limit: 20 };
      if (state.status !== "active") query.status = state.status;
      if (state.category) query.category = state.category;
      if (state.priority) query.priority = state.priority;
      if (append && state.cursor) query.cursor = state.cursor;
      try {
        const page = await live.inbox.list(query);
        if (mine !== seq) return;
        state.items = append ? [...state.items, ...page.items] : page.items;
        state.cursor = page.next_cursor;
        renderList();
      } catch (e) {
        if (mine === seq) error.textContent = errText(e);
      }
    };

    root.append(
      pageHead(
        t("inbox.title"),
        t("inbox.lead"),
        h(
          "button",
          {
            type: "button",
            class: "secondary",
            id: "inbox-readall",
            onclick: () =>
              live.inbox
                .readAll(state.category || undefined)
                .then(() => load(false))
                .catch((e) => toast(errText(e), "error")),
          },
          t("inbox.readall"),
        ),
      ),
      h(
        "div",
        { class: "toolbar" },
        tabs,
        h("label", { class: "inline" }, t("inbox.category"), category),
        h("label", { class: "inline" }, t("inbox.priority"), priority),
      ),
      counts,
      error,
      h("section", { class: "card flush" }, list),
      h("div", { class: "row center" }, more),
    );

    // Live: the bell's inbox changes on every event; refetch our filtered page.
    const refetch = debounced(() => load(false), 150);
    const off = live.inbox.on("change", () => {
      renderCounts();
      refetch();
    });
    renderCounts();
    load(false);
    return () => off();
  },
};
