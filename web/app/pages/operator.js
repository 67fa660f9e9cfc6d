import { t } from "../i18n.js";
import { h, pageHead } from "../ui.js";

export default {
  id: "operator",
  render(root) {
    root.append(pageHead(t("nav.operator")));
  },
};
