// Draws every Plotly figure of a page from its json_script data, and redraws in place when a
// polled htmx partial brings new data. A chart is <div data-figure="ID">; its figure is the JSON
// in <script type="application/json" id="ID">. No inline scripts anywhere (CSP).
"use strict";

(function () {
  const config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  const drawn = new WeakMap();

  function draw() {
    if (!window.Plotly) {
      return;
    }
    document.querySelectorAll("[data-figure]").forEach((element) => {
      const source = document.getElementById(element.getAttribute("data-figure"));
      if (!source) {
        return;
      }
      const text = source.textContent;
      // Skip the redraw when the data did not change (most polls between scrapes).
      if (drawn.get(element) === text) {
        return;
      }
      const figure = JSON.parse(text);
      window.Plotly.react(element, figure.data, figure.layout, config);
      drawn.set(element, text);
    });
  }

  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", draw);
})();
