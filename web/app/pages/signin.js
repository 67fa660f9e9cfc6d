// Sign-in: organisation (tenant slug), email, password. On success the
// session module stores the token pair and the router shows the page the
// address asked for.
import { t } from "../i18n.js";
import { session } from "../session.js";
import { errText, h } from "../ui.js";

const LAST_TENANT = "relais.tenant";

export default {
  id: "signin",
  render(root, { langSwitch }) {
    const field = (id, label, attrs) =>
      h("div", { class: "field" }, h("label", { for: id }, label), h("input", { id, name: id, required: true, ...attrs }));
    const expired = sessionStorage.getItem("relais.expired");
    sessionStorage.removeItem("relais.expired");
    const error = h("p", { id: "signin-error", class: "form-error", role: "alert" }, expired ? t("signin.expired") : "");
    const submit = h("button", { type: "submit", class: "wide" }, t("signin.submit"));
    const form = h(
      "form",
      { id: "signin-form", novalidate: true, "aria-describedby": "signin-error" },
      field("tenant", t("signin.tenant"), { value: localStorage.getItem(LAST_TENANT) || "default", autocomplete: "organization", spellcheck: "false" }),
      field("email", t("signin.email"), { type: "email", autocomplete: "username", autofocus: true }),
      field("password", t("signin.password"), { type: "password", autocomplete: "current-password" }),
      error,
      submit,
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      for (const input of form.querySelectorAll("input")) {
        const bad = !input.value.trim() || (input.type === "email" && !input.checkValidity());
        input.setAttribute("aria-invalid", String(bad));
        if (bad) {
          error.textContent = `${input.labels[0].textContent}: ${t("common.required")}`;
          input.focus();
          return;
        }
      }
      submit.disabled = true;
      submit.textContent = t("signin.busy");
      const tenant = form.tenant.value.trim();
      try {
        await session.signIn(tenant, form.email.value.trim(), form.password.value);
        localStorage.setItem(LAST_TENANT, tenant);
      } catch (e) {
        error.textContent = errText(e);
        form.password.value = "";
        form.password.focus();
        submit.disabled = false;
        submit.textContent = t("signin.submit");
      }
    });
    root.append(
      h(
        "div",
        { class: "signin" },
        h(
          "section",
          { class: "card signin-card", "aria-labelledby": "page-title" },
          h("div", { class: "signin-brand" }, h("img", { src: "/app/icon.svg", alt: "", width: 40, height: 40 }), h("span", {}, "Relais"), langSwitch()),
          h("h1", { id: "page-title" }, t("signin.title")),
          h("p", { class: "hint" }, t("signin.lead")),
          form,
        ),
      ),
    );
    (form.email.value ? form.password : form.email).focus();
  },
};
