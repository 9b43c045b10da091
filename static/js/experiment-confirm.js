// An experiment runs on this endpoint: every endpoint action's confirmation says it ends it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const notice = document.querySelector("[data-running-experiment]");
  if (!notice) {
    return;
  }
  const warning = notice.getAttribute("data-running-experiment");
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    if (/\/endpoints\/[^/]+\/(deploy|traffic|promote|rollback|stop)\/?$/.test(form.getAttribute("action") || "")) {
      form.setAttribute("data-confirm", `${form.getAttribute("data-confirm")}\n\n${warning}`);
    }
  }
});
