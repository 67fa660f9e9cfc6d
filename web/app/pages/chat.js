// Chat: the user's rooms with live unread counts, a room's history and live
// messages, who is online, typing indicators, read markers and mentions,
// through the SDK's ChatApi / ChatRoom / ChatUnread. The open room is in the
// address (`#/chat/<room id>`).
import { ChatApi, ChatRoom, ChatUnread } from "/vendor/relais.js";
import { t } from "../i18n.js";
import { live } from "../live.js";
import { session } from "../session.js";
import { empty, errText, fmtDateTime, h, pageHead, throttled, toast } from "../ui.js";

// Display names by user id: the user's own, the members of the rooms opened
// (each room's list fetched once, then cached), and those the hub's system
// messages name.
const names = new Map();
const roomMembers = new Map();

/** Fetches a room's members once (every page) and learns their names. */
function loadMembers(chat, roomId, { refresh = false } = {}) {
  if (refresh) roomMembers.delete(roomId);
  if (!roomMembers.has(roomId)) {
    const loading = (async () => {
      const found = new Map();
      let after;
      do {
        const page = await chat.members(roomId, after ? { after, limit: 500 } : { limit: 500 });
        for (const m of page.members) found.set(m.id, m.display_name);
        after = page.next_after;
      } while (after);
      return found;
    })();
    roomMembers.set(roomId, loading);
    loading.catch(() => roomMembers.delete(roomId));
  }
  return roomMembers.get(roomId).then((found) => {
    for (const [id, name] of found) names.set(id, name);
    return found;
  });
}

const nameOf = (id) => names.get(id) || (id ? id.slice(0, 8) : "");

/** The text with `@handles` marked. */
function withMentions(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(/(^|[^\w.-])(@[\w.-]+)/g)) {
    const at = m.index + m[1].length;
    out.push(text.slice(last, at), h("span", { class: "mark" }, m[2]));
    last = at + m[2].length;
  }
  out.push(text.slice(last));
  return out;
}

export default {
  id: "chat",
  render(root, { args }) {
    const chat = new ChatApi(live.rest);
    const unread = new ChatUnread(live.client);
    const me = session.current()?.user?.id;
    const roomId = args[0] ? decodeURIComponent(args[0]) : null;
    let room = null;
    let rooms = [];
    let alive = true;
    const asked = new Set();

    const error = h("p", { class: "form-error", role: "alert" });
    const roomList = h("ul", { class: "rooms", id: "chat-rooms", "aria-label": t("chat.rooms") });
    const newName = h("input", { id: "chat-new-name", maxlength: 100, autocomplete: "off", required: true });
    const newForm = h(
      "form",
      { class: "stack pad", novalidate: true },
      h("label", { for: "chat-new-name" }, t("chat.roomname")),
      h("div", { class: "row" }, newName, h("button", { type: "submit", class: "secondary small" }, t("chat.create"))),
    );
    newForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = newName.value.trim();
      if (!name) {
        newName.setAttribute("aria-invalid", "true");
        error.textContent = `${t("chat.roomname")}: ${t("common.required")}`;
        newName.focus();
        return;
      }
      newName.setAttribute("aria-invalid", "false");
      try {
        const r = await chat.createGroup(name);
        location.hash = `#/chat/${encodeURIComponent(r.id)}`;
      } catch (e) {
        error.textContent = errText(e);
      }
    });

    const renderRooms = () => {
      roomList.replaceChildren(
        ...(rooms.length
          ? rooms.map((r) => {
              const n = unread.rooms.get(r.id) ?? r.unread ?? 0;
              return h(
                "li",
                {},
                h(
                  "a",
                  { class: "button room-link", href: `#/chat/${encodeURIComponent(r.id)}`, "data-room": r.id, "aria-current": r.id === roomId ? "true" : false },
                  h("span", {}, r.kind === "general" ? "# General" : `# ${r.name || r.kind}`),
                  n ? h("span", { class: "tag pending", "aria-label": t("chat.unread", { n }) }, String(n)) : null,
                ),
              );
            })
          : [h("li", {}, empty(t("chat.norooms")))]),
      );
    };

    // ------------------------------------------------------------ the room
    const messages = h("ol", { class: "messages", id: "chat-messages", role: "log", "aria-live": "polite", tabindex: "0", "aria-label": t("chat.title") });
    const typing = h("p", { class: "typing", id: "chat-typing", "aria-live": "polite" });
    const online = h("span", { class: "hint", id: "chat-online" });
    const title = h("h2", { id: "chat-room-title" });
    const older = h("button", { type: "button", class: "link", hidden: true, onclick: () => room?.loadOlder().then((more) => (older.hidden = !more)) }, t("chat.older"));
    const input = h("textarea", { id: "chat-input", rows: 2, maxlength: 4000, placeholder: t("chat.message"), "aria-label": t("chat.message") });
    const composer = h("form", { class: "composer", novalidate: true }, input, h("button", { type: "submit", id: "chat-send" }, t("chat.send")));

    const msgRow = (m) => {
      if (m.type === "system") return h("li", { class: "msg system hint", "data-seq": m.seq }, m.text, " · ", fmtDateTime(m.created_at, { timeStyle: "short" }));
      const mentioned = me && (m.mentions || []).some((x) => x === me || x === "room");
      return h(
        "li",
        { class: `msg${m.author === me ? " mine" : ""}${mentioned ? " mention" : ""}`, "data-seq": m.seq, "data-id": m.id },
        h("span", { class: "who" }, nameOf(m.author)),
        h("time", { class: "when", datetime: new Date(m.created_at).toISOString() }, fmtDateTime(m.created_at, { timeStyle: "short" })),
        m.edited_at ? h("span", { class: "hint" }, ` (${t("chat.edited")})`) : null,
        mentioned ? h("span", { class: "visually-hidden" }, ` ${t("chat.mention")}`) : null,
        h("div", { class: "text" }, m.deleted_at ? h("em", { class: "hint" }, t("chat.deleted")) : withMentions(m.text)),
      );
    };

    const renderMessages = throttled(() => {
      if (!room) return;
      const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
      const list = room.messages;
      // The hub's system messages name their user ("Awa connected"): learn the names.
      for (const m of list) {
        const found = m.type === "system" && m.user && !names.has(m.user) && /^(.+) (connected|joined|disconnected|left)$/.exec(m.text);
        if (found) names.set(m.user, found[1]);
      }
      messages.replaceChildren(...(list.length ? list.map(msgRow) : [h("li", {}, empty(t("chat.empty")))]));
      if (atBottom) messages.scrollTop = messages.scrollHeight;
    });

    const renderTyping = () => {
      const who = room?.typingUsers ?? [];
      typing.textContent = who.length === 0 ? "" : who.length === 1 ? t("chat.typing", { who: nameOf(who[0]) }) : t("chat.typing.many");
    };

    const refreshPresence = async () => {
      try {
        const p = await room.presence();
        const ids = [...new Set((p.members ?? []).map((m) => m.user).filter(Boolean))];
        // Someone not in the list fetched (they joined since): fetch it again, once per newcomer.
        const fresh = ids.filter((id) => !names.has(id) && !asked.has(id));
        if (fresh.length) {
          for (const id of fresh) asked.add(id);
          await loadMembers(chat, roomId, { refresh: true }).catch(() => {});
          renderMessages();
          renderTyping();
        }
        const who = ids.map(nameOf).sort((a, b) => a.localeCompare(b));
        online.textContent = who.length ? t("chat.online.who", { n: p.users, who: who.join(", ") }) : t("chat.online", { n: p.users });
      } catch {
        online.textContent = "";
      }
    };

    let marking = false;
    const markRead = async () => {
      if (!room || marking || document.visibilityState !== "visible" || !room.lastSeq) return;
      marking = true;
      try {
        await room.markRead();
      } catch {
        // the next message tries again
      } finally {
        marking = false;
      }
    };

    const send = async () => {
      const text = input.value.trim();
      if (!text || !room) return;
      input.value = "";
      try {
        await room.send(text);
      } catch (e) {
        input.value = text;
        toast(errText(e), "error");
      }
    };
    composer.addEventListener("submit", (ev) => {
      ev.preventDefault();
      send();
    });
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        send();
      }
    });
    input.addEventListener("input", () => {
      if (input.value.trim()) room?.typing().catch(() => {});
    });

    const pane = roomId
      ? h(
          "section",
          { class: "card flush room", "aria-labelledby": "chat-room-title" },
          h("div", { class: "room-head" }, title, online),
          h("div", { class: "row center" }, older),
          messages,
          typing,
          composer,
        )
      : h("section", { class: "card room" }, empty(t("chat.pick")));

    root.append(
      pageHead(t("chat.title"), t("chat.lead")),
      error,
      h("div", { class: "chat" }, h("aside", { class: "card flush", "aria-label": t("chat.rooms") }, roomList, newForm), pane),
    );

    const onVisible = () => markRead();
    document.addEventListener("visibilitychange", onVisible);

    (async () => {
      try {
        const own = session.current()?.user;
        if (own) names.set(own.id, own.display_name || own.email);
        await live.inboxReady;
        const list = await chat.rooms();
        if (!alive) return;
        rooms = list.rooms;
        renderRooms();
        unread.on("change", renderRooms);
        await unread.start();
        if (!roomId) {
          const general = rooms.find((r) => r.kind === "general") || rooms[0];
          if (general) location.replace(`#/chat/${encodeURIComponent(general.id)}`);
          return;
        }
        const info = rooms.find((r) => r.id === roomId);
        title.textContent = info ? (info.kind === "general" ? "# General" : `# ${info.name || info.kind}`) : roomId;
        // Names first, so the first render shows them; a failure leaves short ids.
        await loadMembers(chat, roomId).catch(() => {});
        if (!alive) return;
        room = new ChatRoom(live.client, roomId, { api: chat });
        room.on("change", () => {
          renderMessages();
          markRead();
        });
        room.on("typing", renderTyping);
        room.on("join", refreshPresence);
        room.on("leave", refreshPresence);
        await room.start();
        if (!alive) return room.stop().catch(() => {});
        older.hidden = room.messages.length < 50;
        renderMessages();
        refreshPresence();
        markRead();
        input.focus();
      } catch (e) {
        if (alive) error.textContent = errText(e);
      }
    })();

    return () => {
      alive = false;
      document.removeEventListener("visibilitychange", onVisible);
      unread.stop().catch(() => {});
      room?.stop().catch(() => {});
    };
  },
};
