// A ticked "force" box on an endpoint form adds a warning to that form's confirmation.
"use strict";

const FORCE_WARNING =
  "FORCE is ticked: if the new version's inputs or outputs differ from what the endpoint " +
  "serves, it goes live anyway and clients that send the old inputs will get errors. " +
  "This is recorded in the audit log.";

document.addEventListener("change", (event) => {
  const box = event.target;
  if (!(box instanceof HTMLInputElement) || box.name !== "force" || !box.form) {
    return;
  }
  const form = box.form;
  const base = form.getAttribute("data-confirm-base") ?? form.getAttribute("data-confirm") ?? "";
  form.setAttribute("data-confirm-base", base);
  form.setAttribute("data-confirm", box.checked ? `${base}\n\n${FORCE_WARNING}` : base);
});
