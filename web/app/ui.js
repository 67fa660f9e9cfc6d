// Small DOM helpers shared by the pages. No framework: pages build their
// DOM with `h()` and re-render the parts that change.
import { t, lang } from "./i18n.js";

/**
 * `h("button", {class: "x", onclick: fn, disabled: true}, "text", child)`.
 * `false`/`null`/`undefined` props are left out; `true` sets an empty attribute.
 * `value`, `checked` and `selected` are set as properties.
 */
export function h(tag, props = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value" || k === "checked" || k === "selected") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, kids);
  return el;
}

function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : String(k));
  }
}

/** A readable message for any error (SDK `RelaisError`s carry a code). */
export function errText(e) {
  if (!e) return "";
  if (typeof e === "string") return e;
  const known = e.code && t(`error.${e.code}`, {}, "");
  if (known) return known;
  return e.code && e.code !== "http_error" ? `${e.message} (${e.code})` : String(e.message || e);
}

/** Time of `v` (Unix ms, Unix s, or an RFC 3339 string) in the user's language. */
export function fmtDateTime(v, opts = { dateStyle: "medium", timeStyle: "short" }) {
  if (v === null || v === undefined || v === "") return "—";
  const d = typeof v === "number" ? new Date(v < 1e12 ? v * 1000 : v) : new Date(v);
  return Number.isNaN(d.getTime()) ? String(v) : new Intl.DateTimeFormat(lang(), opts).format(d);
}

export function fmtTime(v, timeZone) {
  const d = new Date(v);
  return new Intl.DateTimeFormat(lang(), { hour: "2-digit", minute: "2-digit", timeZone }).format(d);
}

/** "3 minutes ago" style. */
export function fmtAgo(ms) {
  const s = Math.round((ms - Date.now()) / 1000);
  const rtf = new Intl.RelativeTimeFormat(lang(), { numeric: "auto" });
  const a = Math.abs(s);
  if (a < 60) return rtf.format(s, "second");
  if (a < 3600) return rtf.format(Math.round(s / 60), "minute");
  if (a < 86400) return rtf.format(Math.round(s / 3600), "hour");
  return rtf.format(Math.round(s / 86400), "day");
}

/** Polite announcement for screen readers, and a short visible toast. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

/**
 * A modal dialog asking for a text (e.g. a rejection reason). Resolves with
 * the text, or `null` when cancelled. `required` refuses an empty answer.
 */
export function askText({ title, label, confirm, required = false, maxLength = 2000, danger = false }) {
  return new Promise((resolve) => {
    const input = h("textarea", { id: "ask-text", rows: 4, maxlength: maxLength, required });
    const error = h("p", { class: "form-error", id: "ask-error", role: "alert" });
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": "ask-title" },
      h(
        "form",
        { method: "dialog", novalidate: true },
        h("h2", { id: "ask-title" }, title),
        h("label", { for: "ask-text" }, label),
        input,
        error,
        h(
          "div",
          { class: "row end" },
          h("button", { type: "button", class: "secondary", onclick: () => dialog.close("") }, t("common.cancel")),
          h("button", { type: "submit", class: danger ? "danger" : "", value: "ok" }, confirm),
        ),
      ),
    );
    dialog.querySelector("form").addEventListener("submit", (ev) => {
      if (required && !input.value.trim()) {
        ev.preventDefault();
        input.setAttribute("aria-invalid", "true");
        error.textContent = t("common.required");
        input.focus();
      }
    });
    dialog.addEventListener("close", () => {
      const ok = dialog.returnValue === "ok";
      dialog.remove();
      resolve(ok ? input.value.trim() : null);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

/** Saves `blob` as `name` through a temporary link. */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** An empty-state block. */
export function empty(text) {
  return h("p", { class: "empty" }, text);
}

/** A page header: title, optional subtitle and actions. */
export function pageHead(title, subtitle, ...actions) {
  return h(
    "header",
    { class: "page-head" },
    h("div", {}, h("h1", { id: "page-title", tabindex: "-1" }, title), subtitle ? h("p", { class: "hint" }, subtitle) : null),
    actions.length ? h("div", { class: "row" }, actions) : null,
  );
}

/** Calls `fn` at most once per animation frame. */
export function throttled(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}

/** Calls `fn` once `ms` after the last call. */
export function debounced(fn, ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
