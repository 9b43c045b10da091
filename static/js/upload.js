// Upload page: posts the form with XMLHttpRequest so the browser reports real upload progress,
// then follows validation through the API until the version is ready or invalid.
// No inline scripts (CSP): everything the page needs is in the DOM.
"use strict";

(() => {
  const form = document.querySelector("form[data-upload]");
  if (!form) {
    return;
  }
  const status = document.getElementById("upload-status");
  const progress = document.getElementById("upload-progress");
  const progressText = document.getElementById("upload-progress-text");
  const result = document.getElementById("upload-result");
  const button = form.querySelector("button[type=submit]");
  const FINISHED = new Set(["ready", "invalid", "archived"]);

  function formatBytes(bytes) {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${Math.round(value)} ${units[unit]}` : `${value.toFixed(1)} ${units[unit]}`;
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) {
      node.textContent = text;
    }
    if (className) {
      node.className = className;
    }
    return node;
  }

  function show(message, kind) {
    result.hidden = false;
    result.replaceChildren(element("p", message, `message ${kind}`));
  }

  function describe(spec) {
    return `${spec.name}: ${spec.datatype} [${spec.shape.join(", ")}]${spec.type ? ` (${spec.type})` : ""}`;
  }

  function showVersion(version, pageUrl) {
    const ok = version.status === "ready";
    const title = ok
      ? `Version ${version.number} is ready.`
      : `Version ${version.number} is ${version.status}: ${version.status_reason || "no reason given."}`;
    const children = [element("p", title, `message ${ok ? "success" : "error"}`)];
    if (ok && version.signature && version.signature.inputs) {
      const list = element("ul", undefined, "plain");
      for (const spec of version.signature.inputs) {
        list.append(element("li", `input ${describe(spec)}`));
      }
      for (const spec of version.signature.outputs || []) {
        list.append(element("li", `output ${describe(spec)}`));
      }
      children.push(list);
    }
    const link = element("a", `Open version ${version.number}`, "button");
    link.href = pageUrl;
    children.push(link);
    result.hidden = false;
    result.replaceChildren(...children);
  }

  function follow(created) {
    fetch(created.api_url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
      .then((version) => {
        if (FINISHED.has(version.status)) {
          progressText.textContent = "";
          showVersion(version, created.url);
        } else {
          progressText.textContent = `Validating version ${version.number}… (${version.status})`;
          window.setTimeout(() => follow(created), 2000);
        }
      })
      .catch(() => window.setTimeout(() => follow(created), 5000));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const request = new XMLHttpRequest();
    const started = performance.now();
    request.open("POST", form.action || window.location.href);
    request.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    request.setRequestHeader("X-CSRFToken", data.get("csrfmiddlewaretoken") || "");
    request.responseType = "json";
    status.hidden = false;
    result.hidden = true;
    progress.value = 0;
    progress.max = 1;
    button.disabled = true;

    request.upload.addEventListener("progress", (progressEvent) => {
      if (!progressEvent.lengthComputable) {
        return;
      }
      progress.max = progressEvent.total;
      progress.value = progressEvent.loaded;
      const seconds = Math.max((performance.now() - started) / 1000, 0.001);
      const percent = Math.floor((100 * progressEvent.loaded) / progressEvent.total);
      progressText.textContent = `${formatBytes(progressEvent.loaded)} of ${formatBytes(progressEvent.total)} (${percent} %), ${formatBytes(progressEvent.loaded / seconds)}/s`;
    });
    request.upload.addEventListener("load", () => {
      progressText.textContent = "Uploaded; the server is checking the file…";
    });
    request.addEventListener("load", () => {
      button.disabled = false;
      const body = request.response || {};
      if (request.status === 201) {
        show(`Version ${body.number} uploaded; validating…`, "success");
        follow(body);
      } else {
        progressText.textContent = "";
        show(body.error || `The upload failed (HTTP ${request.status}).`, "error");
      }
    });
    request.addEventListener("error", () => {
      button.disabled = false;
      progressText.textContent = "";
      show("The connection broke during the upload (the file may be over the size limit).", "error");
    });
    request.send(data);
  });
})();
