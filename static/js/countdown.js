// Counts down <span data-countdown="SECONDS"> once a second as "m:ss" (the warm window).
"use strict";

function tickCountdowns() {
  document.querySelectorAll("[data-countdown]").forEach((element) => {
    const left = Math.max(0, Number(element.getAttribute("data-countdown")) - 1);
    element.setAttribute("data-countdown", String(left));
    element.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  });
}

if (!window.countdownStarted) {
  window.countdownStarted = true;
  setInterval(tickCountdowns, 1000);
}
