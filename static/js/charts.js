// Draws every Plotly figure of a page from its json_script data, and redraws in place when a
// polled htmx partial brings new data. A chart is <div data-figure="ID">; its figure is the JSON
// in <script type="application/json" id="ID">. No inline scripts anywhere (CSP).
"use strict";

(function () {
  const config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  const drawn = new WeakMap();

  // A polled partial keeps its figures inside <template data-figures>, because htmx removes
  // every <script> element (JSON data included) from swapped content.
  function figureSource(id) {
    const direct = document.getElementById(id);
    if (direct) {
      return direct;
    }
    for (const holder of document.querySelectorAll("template[data-figures]")) {
      const found = holder.content.getElementById(id);
      if (found) {
        return found;
      }
    }
    return null;
  }

  function draw() {
    if (!window.Plotly) {
      return;
    }
    document.querySelectorAll("[data-figure]").forEach((element) => {
      const source = figureSource(element.getAttribute("data-figure"));
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
