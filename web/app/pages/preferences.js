// Notification preferences: category × channel (in app, email), email
// frequency, quiet hours, time zone, language, digest hour and day.
// Saved whole with PUT /me/preferences.
import { Preferences } from "/vendor/relais.js";
import { t } from "../i18n.js";
import { live } from "../live.js";
import { errText, h, pageHead, toast } from "../ui.js";

const CATEGORIES = ["campaigns", "diffusion", "moderation", "projects", "tasks", "documents", "chat", "assistant", "account", "system"];
const DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
const FREQS = ["immediate", "daily", "weekly"];

export default {
  id: "preferences",
  render(root) {
    const prefs = new Preferences(live.rest);
    const form = h("form", { id: "prefs-form", class: "stack", novalidate: true }, h("p", { class: "hint" }, t("app.loading")));
    const error = h("p", { class: "form-error", role: "alert", id: "prefs-error" });
    root.append(pageHead(t("prefs.title"), t("prefs.lead")), error, form);
    let alive = true;

    const fill = (doc) => {
      const cats = [...new Set([...CATEGORIES, ...Object.keys(doc.categories || {})])];
      const rows = cats.map((c) => {
        const p = doc.categories?.[c] || {};
        const label = t(`cat.${c}`, {}, c);
        return h(
          "tr",
          { "data-category": c },
          h("th", { scope: "row" }, label),
          h("td", {}, h("input", { type: "checkbox", name: `in_app:${c}`, checked: p.in_app !== false, "aria-label": `${label}: ${t("prefs.in_app")}` })),
          h("td", {}, h("input", { type: "checkbox", name: `email:${c}`, checked: p.email !== false, "aria-label": `${label}: ${t("prefs.email")}` })),
          h(
            "td",
            {},
            h(
              "select",
              { name: `frequency:${c}`, "aria-label": `${label}: ${t("prefs.frequency")}` },
              FREQS.map((f) => h("option", { value: f, selected: (p.frequency || "immediate") === f }, t(`prefs.freq.${f}`))),
            ),
          ),
        );
      });
      const quiet = doc.quiet_hours;
      const quietOn = h("input", { type: "checkbox", id: "quiet-on", checked: !!quiet });
      const start = h("input", { type: "time", id: "quiet-start", value: quiet?.start || "22:00", disabled: !quiet });
      const end = h("input", { type: "time", id: "quiet-end", value: quiet?.end || "07:00", disabled: !quiet });
      quietOn.addEventListener("change", () => {
        start.disabled = end.disabled = !quietOn.checked;
      });
      const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
      form.replaceChildren(
        h(
          "section",
          { class: "card", "aria-labelledby": "prefs-channels" },
          h("h2", { id: "prefs-channels" }, t("prefs.channels")),
          h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "grid" },
              h(
                "thead",
                {},
                h("tr", {}, h("th", { scope: "col" }, t("prefs.category")), h("th", { scope: "col" }, t("prefs.in_app")), h("th", { scope: "col" }, t("prefs.email")), h("th", { scope: "col" }, t("prefs.frequency"))),
              ),
              h("tbody", {}, rows),
            ),
          ),
        ),
        h(
          "div",
          { class: "cols" },
          h(
            "section",
            { class: "card", "aria-labelledby": "prefs-quiet" },
            h("h2", { id: "prefs-quiet" }, t("prefs.quiet")),
            h("label", { class: "check" }, quietOn, t("prefs.quiet.on")),
            h("div", { class: "row" }, h("div", { class: "field" }, h("label", { for: "quiet-start" }, t("prefs.quiet.start")), start), h("div", { class: "field" }, h("label", { for: "quiet-end" }, t("prefs.quiet.end")), end)),
            h(
              "div",
              { class: "field" },
              h("label", { for: "pref-tz" }, t("prefs.timezone")),
              h("input", { id: "pref-tz", list: "tz-list", value: doc.timezone || "", placeholder: Intl.DateTimeFormat().resolvedOptions().timeZone, autocomplete: "off", spellcheck: "false" }),
              h("datalist", { id: "tz-list" }, zones.map((z) => h("option", { value: z }))),
            ),
          ),
          h(
            "section",
            { class: "card", "aria-labelledby": "prefs-digest" },
            h("h2", { id: "prefs-digest" }, t("prefs.digest")),
            h(
              "div",
              { class: "field" },
              h("label", { for: "pref-locale" }, t("prefs.locale")),
              h(
                "select",
                { id: "pref-locale" },
                h("option", { value: "", selected: !doc.locale }, t("prefs.locale.default")),
                h("option", { value: "en", selected: doc.locale === "en" }, "English"),
                h("option", { value: "fr", selected: doc.locale === "fr" }, "Français"),
              ),
            ),
            h(
              "div",
              { class: "field" },
              h("label", { for: "pref-hour" }, t("prefs.digest_hour")),
              h("select", { id: "pref-hour" }, Array.from({ length: 24 }, (_, i) => h("option", { value: i, selected: doc.digest_hour === i }, `${String(i).padStart(2, "0")}:00`))),
            ),
            h(
              "div",
              { class: "field" },
              h("label", { for: "pref-day" }, t("prefs.digest_weekday")),
              h("select", { id: "pref-day" }, DAYS.map((d) => h("option", { value: d, selected: doc.digest_weekday === d }, t(`day.${d}`)))),
            ),
          ),
        ),
        h("div", { class: "row end" }, h("button", { type: "submit", id: "prefs-save" }, t("common.save"))),
      );
    };

    const read = () => {
      const categories = {};
      for (const tr of form.querySelectorAll("tr[data-category]")) {
        const c = tr.dataset.category;
        categories[c] = {
          in_app: form.elements[`in_app:${c}`].checked,
          email: form.elements[`email:${c}`].checked,
          frequency: form.elements[`frequency:${c}`].value,
        };
      }
      const quietOn = form.querySelector("#quiet-on").checked;
      return {
        locale: form.querySelector("#pref-locale").value || null,
        timezone: form.querySelector("#pref-tz").value.trim() || null,
        quiet_hours: quietOn ? { start: form.querySelector("#quiet-start").value, end: form.querySelector("#quiet-end").value } : null,
        digest_hour: Number(form.querySelector("#pref-hour").value),
        digest_weekday: form.querySelector("#pref-day").value,
        categories,
      };
    };

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      const doc = read();
      if (doc.quiet_hours && (!doc.quiet_hours.start || !doc.quiet_hours.end)) {
        error.textContent = `${t("prefs.quiet")}: ${t("common.required")}`;
        return;
      }
      const button = form.querySelector("#prefs-save");
      button.disabled = true;
      try {
        fill(await prefs.replace(doc));
        toast(t("common.saved"));
      } catch (e) {
        error.textContent = errText(e);
        error.focus?.();
      } finally {
        const b = form.querySelector("#prefs-save");
        if (b) b.disabled = false;
      }
    });

    prefs
      .get()
      .then((doc) => alive && fill(doc))
      .catch((e) => alive && (error.textContent = errText(e)));
    return () => {
      alive = false;
    };
  },
};
