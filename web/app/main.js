// The app shell: header (connection, language, bell, user), a sidebar that
// collapses on narrow screens, and a hash router (`#/inbox`, `#/planning`…)
// rendering one page module at a time.
import { LANGS, onLangChange, setLang, lang, t } from "./i18n.js";
import { live, startLive, stopLive } from "./live.js";
import { session } from "./session.js";
import { errText, fmtAgo, h, throttled, toast } from "./ui.js";
import signin from "./pages/signin.js";
import inbox from "./pages/inbox.js";
import preferences from "./pages/preferences.js";
import moderation from "./pages/moderation.js";
import planning from "./pages/planning.js";
import chat from "./pages/chat.js";
import assistant from "./pages/assistant.js";
import operator from "./pages/operator.js";

const PAGES = [inbox, preferences, moderation, planning, chat, assistant, operator];
const ICONS = {
  inbox: "M4 13h4l2 3h4l2-3h4M5 5h14l1 8v6H4v-6z",
  preferences: "M4 7h10M18 7h2M4 17h4M12 17h8M14 5v4M8 15v4",
  moderation: "M12 3l8 3v6c0 4.5-3.4 8-8 9-4.6-1-8-4.5-8-9V6zM8.5 12l2.5 2.5 4.5-5",
  planning: "M4 6h16v14H4zM4 10h16M9 3v5M15 3v5",
  chat: "M4 5h16v11H9l-5 4z",
  assistant: "M12 3l1.8 4.7L18.5 9l-4.7 1.8L12 15.5l-1.8-4.7L5.5 9l4.7-1.3zM18 15l.9 2.1L21 18l-2.1.9L18 21l-.9-2.1L15 18l2.1-.9z",
  operator: "M4 5h16v5H4zM4 14h16v5H4zM7 7.5h.01M7 16.5h.01",
};

const root = document.getElementById("root");
let cleanup = null;
let shell = null;
let firstRoute = true;

function icon(path) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  const p = document.createElementNS("http://www.w3.org/2000/svg", "path");
  p.setAttribute("d", path);
  svg.append(p);
  return svg;
}

function langSwitch() {
  return h(
    "label",
    { class: "lang" },
    h("span", { class: "visually-hidden" }, t("app.language")),
    h(
      "select",
      { onchange: (ev) => setLang(ev.target.value), "aria-label": t("app.language") },
      Object.keys(LANGS).map((l) => h("option", { value: l, selected: l === lang() }, l === "fr" ? "Français" : "English")),
    ),
  );
}

function allowed(page) {
  return !page.roles || session.hasRole(...page.roles);
}

// ------------------------------------------------------------------ bell

function bell() {
  const count = h("span", { id: "bell-count", class: "count", "aria-hidden": "true", hidden: true }, "0");
  const button = h(
    "button",
    { type: "button", id: "bell", class: "icon-button bell", "aria-haspopup": "true", "aria-expanded": "false", "aria-controls": "bell-panel" },
    icon("M6 16V11a6 6 0 1 1 12 0v5l2 2H4zM10 20a2 2 0 0 0 4 0"),
    count,
  );
  const announce = h("span", { id: "bell-live", class: "visually-hidden", "aria-live": "polite" });
  const list = h("ul", { class: "bell-list" });
  const panel = h(
    "div",
    { id: "bell-panel", class: "popover", hidden: true, role: "region", "aria-label": t("bell.title") },
    h(
      "div",
      { class: "popover-head" },
      h("h2", {}, t("bell.title")),
      h("button", { type: "button", class: "link", onclick: () => live.inbox?.readAll().catch((e) => toast(errText(e), "error")) }, t("bell.readall")),
    ),
    list,
    h("a", { href: "#/inbox", class: "popover-foot", onclick: () => toggle(false) }, t("bell.seeall")),
  );
  const toggle = (open) => {
    panel.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (open) {
      render();
      live.inbox?.seenAll().catch(() => {});
      panel.querySelector("button, a")?.focus();
    }
  };
  button.addEventListener("click", () => toggle(panel.hidden));
  panel.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      toggle(false);
      button.focus();
    }
  });
  document.addEventListener("click", (ev) => {
    if (!panel.hidden && !panel.contains(ev.target) && !button.contains(ev.target)) toggle(false);
  });

  let last = null;
  const render = throttled(() => {
    const c = live.inbox?.counts;
    const unread = c?.unread ?? 0;
    count.textContent = unread > 99 ? "99+" : String(unread);
    count.hidden = unread === 0;
    button.setAttribute("aria-label", t("bell.label", { n: unread }));
    if (last !== null && unread !== last) announce.textContent = t("bell.label", { n: unread });
    last = unread;
    if (panel.hidden) return;
    const items = (live.inbox?.items ?? []).filter((i) => i.status === "unread").slice(0, 6);
    list.replaceChildren(
      ...(items.length
        ? items.map((i) =>
            h(
              "li",
              { class: `bell-item prio-${i.priority}` },
              h(
                "button",
                { type: "button", class: "bell-open", onclick: () => open(i) },
                h("strong", {}, i.title),
                h("span", { class: "hint" }, i.body),
                h("time", { class: "hint", datetime: new Date(i.created_at).toISOString() }, fmtAgo(i.created_at)),
              ),
            ),
          )
        : [h("li", { class: "empty" }, t("bell.empty"))]),
    );
  });
  const open = (i) => {
    live.inbox?.read(i.id).catch(() => {});
    toggle(false);
    if (i.url && /^(https?:\/\/|\/|#)/.test(i.url)) location.assign(i.url);
    else location.hash = "#/inbox";
  };
  return { el: h("div", { class: "bell-wrap" }, button, panel, announce), render };
}

// ----------------------------------------------------------------- shell

function buildShell() {
  const user = session.current()?.user;
  const b = bell();
  const conn = h("span", { id: "conn", class: "conn", role: "status", "data-state": live.state }, t(`conn.${live.state}`));
  const menu = h(
    "button",
    { type: "button", class: "icon-button menu-toggle", "aria-expanded": "false", "aria-controls": "sidebar", "aria-label": t("app.menu") },
    icon("M4 7h16M4 12h16M4 17h16"),
  );
  const nav = h(
    "nav",
    { id: "sidebar", class: "sidebar", "aria-label": t("nav.main") },
    h(
      "ul",
      {},
      PAGES.filter(allowed).map((p) =>
        h("li", {}, h("a", { href: `#/${p.id}`, "data-page": p.id }, icon(ICONS[p.id]), h("span", {}, t(`nav.${p.id}`)))),
      ),
    ),
    session.hasRole("admin") ? h("a", { class: "console-link", href: "/console/" }, t("app.console")) : null,
  );
  menu.addEventListener("click", () => {
    const open = !document.body.classList.contains("nav-open");
    document.body.classList.toggle("nav-open", open);
    menu.setAttribute("aria-expanded", String(open));
  });
  nav.addEventListener("click", (ev) => {
    if (ev.target.closest("a")) {
      document.body.classList.remove("nav-open");
      menu.setAttribute("aria-expanded", "false");
    }
  });
  const main = h("main", { id: "main", class: "content", tabindex: "-1" });
  const el = h(
    "div",
    { class: "shell" },
    h("a", { class: "skip", href: "#main", onclick: (ev) => (ev.preventDefault(), main.focus()) }, t("app.skip")),
    h(
      "header",
      { class: "topbar" },
      menu,
      h("a", { class: "brand", href: "#/inbox" }, h("img", { src: "/app/icon.svg", alt: "", width: 24, height: 24 }), t("app.name")),
      conn,
      h("span", { class: "spacer" }),
      langSwitch(),
      b.el,
      h(
        "div",
        { class: "me" },
        h("span", { class: "avatar", "aria-hidden": "true" }, (user?.display_name || user?.email || "?").slice(0, 1).toUpperCase()),
        h("span", { class: "me-name" }, user?.display_name || user?.email || ""),
        h("button", { type: "button", class: "secondary small", id: "signout", onclick: () => session.signOut() }, t("app.signout")),
      ),
    ),
    h("div", { class: "frame" }, nav, main),
  );
  const offState = live.onState((s) => {
    conn.dataset.state = s;
    conn.textContent = t(`conn.${s}`);
  });
  return { el, main, nav, bell: b, dispose: () => offState() };
}

let offInbox = null;
function watchInbox() {
  offInbox?.();
  const inbox = live.inbox;
  if (!inbox || !shell) return;
  const render = shell.bell.render;
  const offChange = inbox.on("change", render);
  const offNew = inbox.on("notification", (i) => toast(i.title));
  offInbox = () => {
    offChange();
    offNew();
  };
  render();
}

// ---------------------------------------------------------------- router

function route() {
  cleanup?.();
  cleanup = null;
  const hash = location.hash.replace(/^#\/?/, "");
  const [id, ...rest] = hash.split("/");
  if (!session.current()) {
    shell?.dispose();
    shell = null;
    stopLive();
    document.title = `${t("signin.title")} · Relais`;
    const next = id && id !== "signin" ? `#/${hash}` : "#/inbox";
    root.className = "";
    root.replaceChildren();
    cleanup = signin.render(root, { next, langSwitch });
    return;
  }
  if (!id || id === "signin") {
    location.replace("#/inbox");
    return;
  }
  startLive();
  if (!shell) {
    shell = buildShell();
    root.className = "";
    root.replaceChildren(shell.el);
    watchInbox();
  }
  const page = PAGES.find((p) => p.id === id);
  for (const a of shell.nav.querySelectorAll("a[data-page]")) {
    if (a.dataset.page === id) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const main = shell.main;
  main.replaceChildren();
  if (!page) {
    main.append(h("p", { class: "empty" }, t("app.notfound")));
    return;
  }
  if (!allowed(page)) {
    main.append(h("p", { class: "empty" }, t("app.forbidden")));
    return;
  }
  document.title = `${t(`nav.${page.id}`)} · Relais`;
  main.dataset.page = page.id;
  try {
    cleanup = page.render(main, { args: rest });
  } catch (e) {
    main.append(h("p", { class: "form-error" }, t("common.error", { msg: errText(e) })));
  }
  if (!firstRoute) main.querySelector("#page-title")?.focus();
  firstRoute = false;
}

function rebuild() {
  shell?.dispose();
  shell = null;
  route();
}

session.onChange((kind, detail) => {
  if (kind === "signed-out") {
    cleanup?.();
    cleanup = null;
    stopLive();
    if (detail?.reason === "expired") sessionStorage.setItem("relais.expired", "1");
    rebuild();
  } else {
    stopLive();
    rebuild();
  }
});
onLangChange(rebuild);
window.addEventListener("hashchange", route);
route();
