// Moderation console: live counts of every queue (the `queues` channel),
// the items of the chosen queue, approve / reject with a reason, take for
// review / release. The list is fetched again when its queue's counts move.
import { QueueCounts, Queues } from "/vendor/relais.js";
import { t } from "../i18n.js";
import { live } from "../live.js";
import { askText, debounced, empty, errText, fmtDateTime, h, pageHead, toast } from "../ui.js";

const SHOWN = ["pending", "in_review", "approved", "rejected"];

export default {
  id: "moderation",
  roles: ["admin", "moderator"],
  render(root) {
    const queues = new Queues(live.rest);
    const counts = new QueueCounts(live.client);
    const state = { queue: null, status: "pending,in_review", items: [], cursor: null };
    const stats = h("div", { class: "stats", id: "queue-stats", role: "group", "aria-label": t("mod.queues") });
    const announce = h("p", { class: "visually-hidden", "aria-live": "polite", id: "mod-live" });
    const list = h("ul", { class: "list", id: "mod-list" });
    const more = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => load(true) }, t("common.more"));
    const error = h("p", { class: "form-error", role: "alert" });
    const status = h(
      "select",
      { id: "mod-status", onchange: (ev) => ((state.status = ev.target.value), load(false)) },
      h("option", { value: "pending,in_review" }, t("mod.open")),
      ["pending", "in_review", "approved", "rejected", "withdrawn"].map((s) => h("option", { value: s }, t(`mod.${s}`))),
    );
    const listTitle = h("h2", { id: "mod-list-title" });

    const renderStats = () => {
      const names = [...counts.counts.keys()].sort();
      if (!state.queue && names.length) {
        state.queue = names[0];
        load(false);
      }
      stats.replaceChildren(
        ...(names.length
          ? names.map((q) => {
              const c = counts.counts.get(q);
              return h(
                "button",
                {
                  type: "button",
                  class: "stat",
                  "data-queue": q,
                  "aria-pressed": String(q === state.queue),
                  onclick: () => {
                    state.queue = q;
                    renderStats();
                    load(false);
                  },
                },
                h("span", { class: "label" }, q),
                h("span", { class: "value", "data-count": "pending" }, String(c.pending)),
                h("span", { class: "sub" }, `${t("mod.pending")} · ${c.in_review} ${t("mod.in_review")}`),
              );
            })
          : [empty(t("mod.noqueues"))]),
      );
      listTitle.textContent = state.queue ?? "";
    };

    const decide = async (item, to) => {
      let reason;
      if (to === "rejected") {
        reason = await askText({ title: t("mod.reject.title", { title: item.title }), label: t("mod.reason"), confirm: t("mod.reject"), required: true, danger: true });
        if (reason === null) return;
      }
      try {
        await queues.transition(item.queue, item.id, to, reason ? { reason } : {});
        if (to === "approved") toast(t("mod.approved.toast", { title: item.title }));
        if (to === "rejected") toast(t("mod.rejected.toast", { title: item.title }));
        await load(false);
      } catch (e) {
        toast(errText(e), "error");
        await load(false);
      }
    };

    const row = (i) => {
      const open = i.status === "pending" || i.status === "in_review";
      const btn = (to, label, cls) =>
        h("button", { type: "button", class: `small ${cls}`, "data-action": to, "aria-label": `${label}: ${i.title}`, onclick: () => decide(i, to) }, label);
      return h(
        "li",
        { class: "item", "data-id": i.id },
        h(
          "div",
          { class: "item-main" },
          h("div", { class: "item-title" }, h("strong", {}, i.title), h("span", { class: `tag ${i.status}` }, t(`mod.${i.status}`))),
          h(
            "div",
            { class: "item-meta" },
            h("span", { class: "mono" }, i.external_ref),
            i.submitter ? h("span", {}, t("mod.by", { who: i.submitter })) : null,
            i.created_at ? h("span", {}, fmtDateTime(i.created_at)) : null,
            i.reason ? h("span", {}, `“${i.reason}”`) : null,
          ),
          i.payload && Object.keys(i.payload).length
            ? h("details", {}, h("summary", { class: "hint" }, "payload"), h("pre", { class: "mono" }, JSON.stringify(i.payload, null, 2)))
            : null,
        ),
        open
          ? h(
              "div",
              { class: "item-actions" },
              i.status === "pending" ? btn("in_review", t("mod.review"), "secondary") : btn("pending", t("mod.release"), "secondary"),
              btn("rejected", t("mod.reject"), "danger"),
              btn("approved", t("mod.approve"), "ok"),
            )
          : null,
      );
    };

    let seq = 0;
    const load = async (append) => {
      if (!state.queue) return;
      const mine = ++seq;
      error.textContent = "";
      try {
        const page = await queues.list(state.queue, { status: state.status, limit: 50, ...(append && state.cursor ? { cursor: state.cursor } : {}) });
        if (mine !== seq) return;
        state.items = append ? [...state.items, ...page.items] : page.items;
        state.cursor = page.next_cursor;
        list.replaceChildren(...(state.items.length ? state.items.map(row) : [h("li", {}, empty(t("mod.empty")))]));
        more.hidden = !state.cursor;
      } catch (e) {
        if (mine === seq) error.textContent = errText(e);
      }
    };
    const reload = debounced(() => load(false), 120);

    counts.on("change", ({ queues: moved }) => {
      renderStats();
      if (state.queue && moved.includes(state.queue)) {
        const c = counts.counts.get(state.queue);
        announce.textContent = t("mod.counts.live", { queue: state.queue, ...c });
        reload();
      }
    });

    root.append(
      pageHead(t("mod.title"), t("mod.lead")),
      error,
      stats,
      announce,
      h(
        "section",
        { class: "card flush", "aria-labelledby": "mod-list-title" },
        h("div", { class: "toolbar pad" }, listTitle, h("span", { class: "spacer" }), h("label", { class: "inline" }, t("mod.show"), status)),
        list,
      ),
      h("div", { class: "row center" }, more),
    );
    renderStats();
    counts.start().catch((e) => (error.textContent = errText(e)));
    return () => {
      counts.stop().catch(() => {});
    };
  },
};
