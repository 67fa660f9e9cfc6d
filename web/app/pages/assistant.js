// Assistant: the user's conversations; a question's answer streams in
// (the SDK's AssistantConversation on `assistant:<conversation>`), Stop
// cancels it, and a reload mid-answer picks the stream up where it is (the
// channel's snapshot holds the text so far). The open conversation is in
// the address (`#/assistant/<id>`).
import { AssistantApi, AssistantConversation } from "/vendor/relais.js";
import { t } from "../i18n.js";
import { live } from "../live.js";
import { empty, errText, fmtDateTime, h, pageHead, throttled, toast } from "../ui.js";

export default {
  id: "assistant",
  render(root, { args }) {
    const asst = new AssistantApi(live.rest);
    const convId = args[0] ? decodeURIComponent(args[0]) : null;
    let conv = null;
    let alive = true;

    const error = h("p", { class: "form-error", role: "alert", id: "asst-error" });
    const list = h("ul", { class: "rooms", id: "asst-conversations", "aria-label": t("asst.conversations") });
    const picker = h("select", { id: "asst-assistant", "aria-label": t("asst.assistant") });
    const newButton = h("button", { type: "button", class: "secondary small", id: "asst-new" }, t("asst.new"));
    const turns = h("ol", { class: "list", id: "asst-turns", "aria-live": "polite", "aria-busy": "false" });
    const status = h("p", { class: "hint", id: "asst-status", role: "status" });
    const input = h("textarea", { id: "asst-input", rows: 3, maxlength: 8000, "aria-label": t("asst.ask"), placeholder: t("asst.ask") });
    const sendButton = h("button", { type: "submit", id: "asst-send" }, t("asst.send"));
    const stopButton = h("button", { type: "button", class: "danger", id: "asst-stop", hidden: true }, t("asst.stop"));
    const composer = h("form", { class: "composer", novalidate: true }, input, sendButton, stopButton);

    newButton.addEventListener("click", async () => {
      try {
        const r = await asst.createConversation(picker.value || undefined);
        location.hash = `#/assistant/${encodeURIComponent(r.conversation.id)}`;
      } catch (e) {
        error.textContent = errText(e);
      }
    });

    const turn = (m) => {
      const streaming = m.status === "streaming";
      return h(
        "li",
        { class: `turn ${m.role}`, "data-id": m.id, "data-status": m.status },
        h("span", { class: "who" }, m.role === "user" ? t("asst.you") : t("asst.assistant")),
        h("div", { class: `answer${streaming ? " cursor" : ""}` }, m.content),
        m.status === "cancelled" ? h("p", { class: "hint" }, t("asst.stopped")) : null,
        m.status === "incomplete" ? h("p", { class: "form-error" }, t("asst.error", { msg: m.error || m.status })) : null,
      );
    };

    const render = throttled(() => {
      if (!conv) return;
      const msgs = conv.messages;
      const streaming = !!conv.streamingRun;
      turns.replaceChildren(...(msgs.length ? msgs.map(turn) : [h("li", {}, empty(t("asst.empty")))]));
      turns.setAttribute("aria-busy", String(streaming));
      status.textContent = streaming ? t("asst.streaming") : "";
      stopButton.hidden = !streaming;
      sendButton.disabled = streaming;
      turns.lastElementChild?.scrollIntoView({ block: "nearest" });
    });

    composer.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const text = input.value.trim();
      if (!text || !conv) {
        if (!text) input.setAttribute("aria-invalid", "true");
        return;
      }
      input.setAttribute("aria-invalid", "false");
      input.value = "";
      sendButton.disabled = true;
      try {
        await conv.send(text);
      } catch (e) {
        input.value = text;
        toast(errText(e), "error");
      } finally {
        render();
      }
    });
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) composer.requestSubmit();
    });
    stopButton.addEventListener("click", async () => {
      try {
        await conv?.cancel();
      } catch (e) {
        if (e?.code !== "not_running") toast(errText(e), "error");
      }
    });

    root.append(
      pageHead(t("asst.title"), t("asst.lead")),
      error,
      h(
        "div",
        { class: "chat" },
        h("aside", { class: "card flush", "aria-label": t("asst.conversations") }, list, h("div", { class: "stack pad" }, picker, newButton)),
        convId
          ? h("section", { class: "card flush room", "aria-label": t("asst.title") }, h("div", { class: "messages" }, turns), h("div", { class: "pad-x" }, status), composer)
          : h("section", { class: "card room" }, empty(t("asst.empty"))),
      ),
    );

    (async () => {
      try {
        const [assistants, conversations] = await Promise.all([asst.assistants(), asst.conversations()]);
        if (!alive) return;
        if (!assistants.length) {
          picker.hidden = newButton.hidden = true;
          error.textContent = t("asst.none");
        }
        picker.replaceChildren(...assistants.map((a) => h("option", { value: a.id }, a.name)));
        list.replaceChildren(
          ...conversations.map((c) =>
            h(
              "li",
              {},
              h(
                "a",
                { class: "button room-link", href: `#/assistant/${encodeURIComponent(c.id)}`, "aria-current": c.id === convId ? "true" : false },
                h("span", {}, c.title || fmtDateTime(c.created_at)),
              ),
            ),
          ),
        );
        if (!convId) return;
        conv = new AssistantConversation(live.client, convId, { api: asst });
        conv.on("change", render);
        conv.on("error", (e) => (error.textContent = errText(e)));
        await conv.start();
        if (!alive) return conv.stop().catch(() => {});
        render();
        input.focus();
      } catch (e) {
        if (alive) error.textContent = errText(e);
      }
    })();

    return () => {
      alive = false;
      conv?.stop().catch(() => {});
    };
  },
};
