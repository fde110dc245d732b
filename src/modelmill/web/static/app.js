// modelmill web UI: the few things htmx does not do. The sidebar toggle, uploads in batches with
// a progress bar (XHR upload progress plus each batch's answer), and the try-it image preview.
// Every page also works without this script: forms post normally.
"use strict";

(function () {
  const SIDEBAR_KEY = "modelmill.sidebar";
  const BATCH_FILES = 16;
  const BATCH_BYTES = 8 * 1024 * 1024;
  const WHOLE_FILE = /\.(zip|csv)$/i; // one request each: the server reads them as a whole

  function setupSidebar() {
    const layout = document.querySelector("[data-layout]");
    const toggle = document.querySelector("[data-sidebar-toggle]");
    if (!layout || !toggle) return;
    const apply = (collapsed) => {
      layout.classList.toggle("collapsed", collapsed);
      toggle.setAttribute("aria-expanded", String(!collapsed));
      toggle.querySelector(".sidebar-label").textContent = collapsed ? "Expand" : "Collapse";
    };
    apply(localStorage.getItem(SIDEBAR_KEY) === "collapsed");
    toggle.addEventListener("click", () => {
      const collapsed = !layout.classList.contains("collapsed");
      localStorage.setItem(SIDEBAR_KEY, collapsed ? "collapsed" : "expanded");
      apply(collapsed);
    });
  }

  function sizeText(bytes) {
    if (bytes < 1024) return bytes + " bytes";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KB";
    return (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  function batchesOf(files) {
    const batches = [];
    let current = [];
    let bytes = 0;
    for (const file of files) {
      if (WHOLE_FILE.test(file.name)) {
        batches.push([file]);
        continue;
      }
      if (current.length && (current.length >= BATCH_FILES || bytes + file.size > BATCH_BYTES)) {
        batches.push(current);
        current = [];
        bytes = 0;
      }
      current.push(file);
      bytes += file.size;
    }
    if (current.length) batches.push(current);
    return batches;
  }

  function send(form, batch, onProgress) {
    return new Promise((resolve) => {
      const data = new FormData();
      data.append("csrf_token", form.querySelector("[name=csrf_token]").value);
      data.append("concept", form.querySelector("[name=concept]").value);
      for (const file of batch) data.append("files", file, file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      });
      xhr.addEventListener("load", () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (error) { body = null; }
        if (xhr.status === 200 && body) resolve(body);
        else resolve({ added: 0, errors: batch.map((f) => ({ file: f.name, error: (body && body.error) || "The server answered " + xhr.status + "." })), fatal: body && body.error });
      });
      xhr.addEventListener("error", () => resolve({ added: 0, errors: batch.map((f) => ({ file: f.name, error: "The upload was interrupted (network error)." })) }));
      xhr.send(data);
    });
  }

  function setupUpload() {
    const form = document.querySelector("[data-upload]");
    if (!form) return;
    const zone = form.querySelector("[data-dropzone]");
    const input = form.querySelector("input[type=file]");
    const chosen = form.querySelector("[data-upload-chosen]");
    const status = form.querySelector("[data-upload-status]");
    const bar = status.querySelector(".progress-fill");
    const meter = status.querySelector("[role=progressbar]");
    const text = status.querySelector("[data-upload-text]");
    const errors = status.querySelector("[data-upload-errors]");
    const button = form.querySelector("button[type=submit]");
    let files = [];

    const showChosen = () => {
      const total = files.reduce((sum, f) => sum + f.size, 0);
      chosen.textContent = files.length ? files.length + " file" + (files.length === 1 ? "" : "s") + " chosen (" + sizeText(total) + ")" : "";
    };
    input.addEventListener("change", () => { files = Array.from(input.files); showChosen(); });
    ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    }));
    ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, () => zone.classList.remove("dragging")));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      files = files.concat(Array.from(event.dataTransfer.files));
      showChosen();
    });

    const setProgress = (share) => {
      const percent = Math.round(Math.min(Math.max(share, 0), 1) * 1000) / 10;
      bar.style.width = percent + "%";
      meter.setAttribute("aria-valuenow", String(percent));
    };

    form.addEventListener("submit", async (event) => {
      if (!files.length) return; // let the server say what is missing, keeping the form
      event.preventDefault();
      const batches = batchesOf(files);
      const total = files.reduce((sum, f) => sum + f.size, 0) || 1;
      let sent = 0;
      let added = 0;
      let failed = 0;
      status.hidden = false;
      errors.replaceChildren();
      button.disabled = true;
      setProgress(0);
      for (const [index, batch] of batches.entries()) {
        const size = batch.reduce((sum, f) => sum + f.size, 0);
        text.textContent = "Uploading batch " + (index + 1) + " of " + batches.length + "…";
        const answer = await send(form, batch, (share) => {
          // The upload is most of the work; the server's processing is the last part of each batch.
          setProgress((sent + share * size * 0.9) / total);
          if (share >= 1) text.textContent = "Processing batch " + (index + 1) + " of " + batches.length + "…";
        });
        sent += size;
        setProgress(sent / total);
        added += answer.added || 0;
        for (const problem of answer.errors || []) {
          failed += 1;
          const item = document.createElement("li");
          const name = document.createElement("span");
          name.className = "mono";
          name.textContent = problem.file;
          item.append(name, ": " + problem.error);
          errors.append(item);
        }
      }
      text.textContent = "Added " + added + " input" + (added === 1 ? "" : "s") + (failed ? "; " + failed + " could not be added (below)." : ".");
      button.disabled = false;
      files = [];
      input.value = "";
      showChosen();
      if (added && window.htmx) {
        htmx.ajax("GET", window.location.pathname, { target: "#grid", select: "#grid", swap: "outerHTML" });
      }
    });
  }

  function setupPreview() {
    document.querySelectorAll("input[type=file][data-preview]:not([data-ready])").forEach((input) => {
      input.dataset.ready = "1";
      const image = document.querySelector(input.dataset.preview);
      input.addEventListener("change", () => {
        const file = input.files[0];
        if (!file || !image) return;
        image.src = URL.createObjectURL(file);
        image.hidden = false;
      });
    });
  }

  function setupSubmitOnce() {
    // Train Model starts a training: a double click must not start two.
    document.querySelectorAll("form#train-form").forEach((form) => {
      form.addEventListener("submit", () => {
        const button = form.querySelector("button[type=submit]");
        setTimeout(() => { button.disabled = true; button.textContent = "Starting…"; }, 0);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupSidebar();
    setupUpload();
    setupPreview();
    setupSubmitOnce();
  });
  document.addEventListener("htmx:afterSettle", setupPreview);
})();
