// Endpoint page: show the running total of the primary and candidate weights while editing.
"use strict";

function updateTrafficTotal(form) {
  const output = form.querySelector(".traffic-total");
  if (!output) return;
  let total = 0;
  form.querySelectorAll("tbody tr").forEach((row) => {
    const weight = row.querySelector("input.traffic-weight");
    const role = row.querySelector("select");
    if (weight && role && role.value !== "shadow") total += Number(weight.value) || 0;
  });
  output.textContent = `Primary and candidate weights: ${total} %` + (total === 100 ? "" : " (must be 100)");
  output.classList.toggle("error", total !== 100);
  const submit = form.querySelector("button[type=submit]");
  if (submit) submit.disabled = total !== 100;
}

document.addEventListener("input", (event) => {
  const form = event.target.closest("form.traffic-form");
  if (form) updateTrafficTotal(form);
});
document.addEventListener("change", (event) => {
  const form = event.target.closest("form.traffic-form");
  if (form) updateTrafficTotal(form);
});
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form.traffic-form").forEach(updateTrafficTotal);
});
