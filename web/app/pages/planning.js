// Planning board: a station's slots for a day or a week (in the station's
// time zone), live from `planning:<station>` through the SDK's
// PlanningView; confirm / aired / cancel; CSV and ICS downloads of the
// window shown.
import { PlanningApi, PlanningView } from "/vendor/relais.js";
import { lang, t } from "../i18n.js";
import { api, fetchFile, live } from "../live.js";
import { askText, empty, errText, fmtTime, h, pageHead, saveBlob, throttled, toast } from "../ui.js";

const STATION_KEY = "relais.planning.station";
const VIEW_KEY = "relais.planning.view";

/** Offset of `zone` from UTC at instant `ms`, in ms. */
function offsetAt(zone, ms) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(new Date(ms));
  const get = (type) => Number(parts.find((p) => p.type === type).value);
  return Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"), get("second")) - Math.floor(ms / 1000) * 1000;
}

/** The instant of local midnight of `ymd` ([y, m, d]) in `zone`. */
function midnight(zone, [y, m, d]) {
  const guess = Date.UTC(y, m - 1, d);
  let ms = guess - offsetAt(zone, guess);
  ms = guess - offsetAt(zone, ms); // once more across a DST change
  return ms;
}

/** [y, m, d] of instant `ms` in `zone`. */
function ymdIn(zone, ms) {
  const s = new Intl.DateTimeFormat("en-CA", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date(ms));
  return s.split("-").map(Number);
}

function addDays([y, m, d], n) {
  const dt = new Date(Date.UTC(y, m - 1, d + n));
  return [dt.getUTCFullYear(), dt.getUTCMonth() + 1, dt.getUTCDate()];
}

/** Monday of the week of `ymd`. */
function monday(ymd) {
  const dow = new Date(Date.UTC(ymd[0], ymd[1] - 1, ymd[2])).getUTCDay();
  return addDays(ymd, -((dow + 6) % 7));
}

const iso = (ms) => new Date(ms).toISOString().replace(/\.000Z$/, "Z");

export default {
  id: "planning",
  roles: ["admin", "editor", "broadcaster"],
  render(root) {
    const planning = new PlanningApi(live.rest);
    const state = {
      stations: [],
      station: null,
      view: localStorage.getItem(VIEW_KEY) === "week" ? "week" : "day",
      day: null, // [y, m, d] in the station's zone
      pv: null,
      flash: new Set(),
    };
    const error = h("p", { class: "form-error", role: "alert", id: "plan-error" });
    const announce = h("p", { class: "visually-hidden", "aria-live": "polite", id: "plan-live" });
    const board = h("div", { id: "plan-board" });
    const heading = h("h2", { id: "plan-range", class: "range" });
    const zoneNote = h("p", { class: "hint", id: "plan-zone" });
    const stationSel = h("select", { id: "plan-station", onchange: (ev) => pick(ev.target.value) });
    const viewTabs = h(
      "div",
      { class: "tabs", role: "group", "aria-label": t("plan.view") },
      ["day", "week"].map((v) =>
        h(
          "button",
          {
            type: "button",
            class: "tab",
            "data-view": v,
            "aria-pressed": String(state.view === v),
            onclick: () => {
              state.view = v;
              localStorage.setItem(VIEW_KEY, v);
              for (const b of viewTabs.children) b.setAttribute("aria-pressed", String(b.dataset.view === v));
              follow();
            },
          },
          t(`plan.${v}`),
        ),
      ),
    );
    const step = (n) => {
      if (!state.day) return;
      state.day = addDays(state.day, n * (state.view === "week" ? 7 : 1));
      follow();
    };

    const windowOf = () => {
      const zone = state.station.time_zone;
      const first = state.view === "week" ? monday(state.day) : state.day;
      const days = state.view === "week" ? 7 : 1;
      return { zone, first, days, from: midnight(zone, first), to: midnight(zone, addDays(first, days)) };
    };

    const download = async (kind) => {
      if (!state.station) return;
      const w = windowOf();
      try {
        const res = await fetchFile(`/stations/${encodeURIComponent(state.station.id)}/export.${kind}?from=${iso(w.from)}&to=${iso(w.to)}`);
        const date = w.first.map((n) => String(n).padStart(2, "0")).join("-");
        saveBlob(await res.blob(), `${state.station.name.replace(/[^\w.-]+/g, "_")}-${date}.${kind}`);
      } catch (e) {
        toast(errText(e), "error");
      }
    };

    const act = async (slot, what) => {
      try {
        if (what === "confirm") await planning.confirm(slot.id);
        else if (what === "aired") await planning.aired(slot.id);
        else if (what === "cancel") {
          const reason = await askText({
            title: t("plan.cancel.title", { time: fmtTime(slot.starts_at, state.station.time_zone) }),
            label: t("plan.cancel.reason"),
            confirm: t("plan.cancel"),
            required: true,
            danger: true,
          });
          if (reason === null) return;
          await planning.cancel(slot.id, reason);
        }
        // The live event updates the board; nothing to refetch.
      } catch (e) {
        toast(errText(e), "error");
      }
    };

    const slotRow = (s) => {
      const zone = state.station.time_zone;
      const btn = (what, label, cls) =>
        h("button", { type: "button", class: `small ${cls}`, "data-action": what, "aria-label": `${label}: ${fmtTime(s.starts_at, zone)} ${s.title || s.spot_ref || ""}`, onclick: () => act(s, what) }, label);
      const actions = [];
      if (s.status === "planned") actions.push(btn("confirm", t("plan.confirm"), "ok"));
      if (s.status === "confirmed") actions.push(btn("aired", t("plan.aired"), "ok"));
      if (s.status === "planned" || s.status === "confirmed") actions.push(btn("cancel", t("plan.cancel"), "secondary"));
      return h(
        "li",
        { class: `slot ${s.status}${state.flash.has(s.id) ? " flash" : ""}`, "data-id": s.id, "data-status": s.status },
        h("time", { class: "time", datetime: s.starts_at }, fmtTime(s.starts_at, zone)),
        h(
          "div",
          { class: "item-main" },
          h("div", { class: "item-title" }, h("strong", {}, s.title || s.spot_ref || t("plan.untitled")), h("span", { class: `tag ${s.status}` }, t(`plan.status.${s.status}`))),
          h(
            "div",
            { class: "item-meta" },
            s.spot_ref ? h("span", { class: "mono" }, s.spot_ref) : null,
            s.campaign_ref ? h("span", {}, s.campaign_ref) : null,
            h("span", {}, `${s.duration}s`),
            s.cancel_reason ? h("span", {}, `“${s.cancel_reason}”`) : null,
          ),
        ),
        h("div", { class: "item-actions" }, actions),
      );
    };

    const render = throttled(() => {
      if (!state.station || !state.day) return;
      const w = windowOf();
      const dayFmt = new Intl.DateTimeFormat(lang(), { weekday: "long", day: "numeric", month: "long", timeZone: "UTC" });
      const label = (ymd) => dayFmt.format(new Date(Date.UTC(ymd[0], ymd[1] - 1, ymd[2])));
      heading.textContent = w.days === 1 ? label(w.first) : `${label(w.first)} – ${label(addDays(w.first, 6))}`;
      zoneNote.textContent = t("plan.zone", { zone: w.zone });
      const slots = state.pv?.slots ?? [];
      const groups = [];
      for (let i = 0; i < w.days; i++) {
        const ymd = addDays(w.first, i);
        const start = midnight(w.zone, ymd);
        const end = midnight(w.zone, addDays(ymd, 1));
        const mine = slots.filter((s) => {
          const at = Date.parse(s.starts_at);
          return at >= start && at < end;
        });
        if (w.days > 1 && !mine.length) continue;
        groups.push(
          h(
            "section",
            { class: "day", "aria-label": label(ymd) },
            w.days > 1 ? h("h2", {}, label(ymd)) : null,
            h("ul", { class: "list card flush" }, mine.length ? mine.map(slotRow) : h("li", {}, empty(t("plan.empty")))),
          ),
        );
      }
      board.replaceChildren(...(groups.length ? groups : [h("div", { class: "card" }, empty(t("plan.empty")))]));
    });

    // (Re)subscribes to the station for the window shown.
    let gen = 0;
    const follow = async () => {
      const mine = ++gen;
      const old = state.pv;
      state.pv = null;
      old?.stop().catch(() => {});
      if (!state.station) return;
      state.day ??= ymdIn(state.station.time_zone, Date.now());
      const w = windowOf();
      const pv = new PlanningView(live.client, state.station.id, { from: iso(w.from), to: iso(w.to) });
      state.pv = pv;
      pv.on("change", ({ slot, type }) => {
        if (mine !== gen) return;
        if (slot) {
          state.flash.add(slot.id);
          setTimeout(() => state.flash.delete(slot.id), 1500);
          announce.textContent = t("plan.changed", { time: fmtTime(slot.starts_at, state.station.time_zone), status: t(`plan.status.${slot.status}`) });
        }
        if (type === "station.updated" && pv.station) state.station = pv.station;
        render();
      });
      render();
      error.textContent = "";
      try {
        await pv.start();
      } catch (e) {
        if (mine === gen) error.textContent = errText(e);
      }
    };

    const pick = (id) => {
      state.station = state.stations.find((s) => s.id === id) || null;
      if (state.station) localStorage.setItem(STATION_KEY, state.station.id);
      state.day = null;
      follow();
    };

    root.append(
      pageHead(t("plan.title"), t("plan.lead"), h("button", { type: "button", class: "secondary", id: "plan-csv", onclick: () => download("csv") }, t("plan.csv")), h("button", { type: "button", class: "secondary", id: "plan-ics", onclick: () => download("ics") }, t("plan.ics"))),
      h(
        "div",
        { class: "toolbar" },
        h("label", { class: "inline", for: "plan-station" }, t("plan.station")),
        stationSel,
        viewTabs,
        h(
          "div",
          { class: "row" },
          h("button", { type: "button", class: "secondary small", "aria-label": t("plan.prev"), onclick: () => step(-1) }, "‹"),
          h("button", { type: "button", class: "secondary small", onclick: () => ((state.day = null), follow()) }, t("plan.today")),
          h("button", { type: "button", class: "secondary small", "aria-label": t("plan.next"), onclick: () => step(1) }, "›"),
        ),
      ),
      heading,
      zoneNote,
      error,
      announce,
      board,
    );

    (async () => {
      try {
        const stations = [];
        let cursor;
        do {
          const page = await api("GET", "/stations", { query: { limit: 100, cursor } });
          stations.push(...page.items);
          cursor = page.next_cursor;
        } while (cursor);
        state.stations = stations.sort((a, b) => a.name.localeCompare(b.name));
        if (!stations.length) {
          board.replaceChildren(h("div", { class: "card" }, empty(t("plan.nostation"))));
          return;
        }
        const saved = localStorage.getItem(STATION_KEY);
        const first = stations.find((s) => s.id === saved) || stations[0];
        stationSel.replaceChildren(...stations.map((s) => h("option", { value: s.id, selected: s.id === first.id }, s.name)));
        pick(first.id);
      } catch (e) {
        error.textContent = errText(e);
      }
    })();

    return () => {
      gen++;
      state.pv?.stop().catch(() => {});
    };
  },
};
