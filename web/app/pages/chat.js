import { t } from "../i18n.js";
import { h, pageHead } from "../ui.js";

export default {
  id: "chat",
  render(root) {
    root.append(pageHead(t("nav.chat")));
  },
};
