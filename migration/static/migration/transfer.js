// mailsuite webmail: the import page. The upload goes by XMLHttpRequest so that its
// progress can be shown; the server answers with the import job it queued, whose
// progress is then polled (GET jobs/<id>/, JSON) until it ends, as for every job on the
// page still queued or running. Without this file the form posts normally and the
// page lists the job.
(function () {
  "use strict";

  var POLL_MS = 700;

  function jobRow(job, statusUrl) {
    var row = document.createElement("li");
    row.className = "job";
    row.setAttribute("data-job", job.id);
    row.setAttribute("data-job-url", statusUrl);
    var name = document.createElement("strong");
    name.textContent = job.label || job.kind;
    name.setAttribute("dir", "auto");
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.setAttribute("data-job-progress", "");
    var state = document.createElement("span");
    state.className = "job-state";
    state.setAttribute("data-job-state", "");
    state.setAttribute("role", "status");
    row.appendChild(name);
    row.appendChild(document.createTextNode(" "));
    row.appendChild(bar);
    row.appendChild(document.createTextNode(" "));
    row.appendChild(state);
    return row;
  }

  function show(row, job) {
    var bar = row.querySelector("[data-job-progress]");
    if (job.percent === null || job.percent === undefined) {
      bar.removeAttribute("value");  // indeterminate: the size of the source is unknown
      bar.hidden = !job.active;
    } else {
      bar.value = job.percent;
      bar.textContent = job.percent + "%";
    }
    row.querySelector("[data-job-state]").textContent = job.state_text;
    row.setAttribute("data-state", job.state);
  }

  function poll(row) {
    var url = row.getAttribute("data-job-url");
    fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (job) {
        if (!job) { return; }
        show(row, job);
        if (job.active) { setTimeout(function () { poll(row); }, POLL_MS); }
        else {
          // Cancel/resume buttons belong to the state: the page as the server draws it has them.
          row.setAttribute("data-finished", "");
        }
      })
      .catch(function () { setTimeout(function () { poll(row); }, POLL_MS * 4); });
  }

  function upload(form, event) {
    event.preventDefault();
    var status = form.querySelector("[data-upload-status]");
    var bar = form.querySelector("[data-upload-progress]");
    var label = form.querySelector("[data-upload-label]");
    var button = form.querySelector("button[type=submit]");
    var file = form.querySelector("input[type=file]").files[0];
    var limit = parseInt(form.getAttribute("data-limit"), 10);
    status.hidden = false;
    if (file && limit && file.size > limit) {
      label.textContent = form.getAttribute("data-too-large");
      return;
    }
    button.disabled = true;
    bar.value = 0;
    label.textContent = form.getAttribute("data-text-uploading");
    var request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) { bar.value = Math.floor(100 * e.loaded / e.total); }
    });
    request.addEventListener("load", function () {
      button.disabled = false;
      var answer = null;
      try { answer = JSON.parse(request.responseText); } catch (ignored) { answer = null; }
      if (request.status !== 201 || !answer) {
        label.textContent = (answer && answer.error) || form.getAttribute("data-text-failed");
        return;
      }
      bar.value = 100;
      label.textContent = form.getAttribute("data-text-uploaded");
      form.reset();
      var list = document.querySelector("[data-jobs]");
      var empty = document.querySelector("[data-jobs-empty]");
      if (empty) { empty.remove(); }
      answer.job.label = file ? file.name : "";
      var row = jobRow(answer.job, answer.status_url);
      list.insertBefore(row, list.firstChild);
      show(row, answer.job);
      poll(row);
    });
    request.addEventListener("error", function () {
      button.disabled = false;
      label.textContent = form.getAttribute("data-text-failed");
    });
    request.send(new FormData(form));
  }

  function start() {
    var form = document.querySelector("form[data-upload]");
    if (form && !form.hasAttribute("data-bound")) {
      form.setAttribute("data-bound", "");
      form.addEventListener("submit", function (event) { upload(form, event); });
    }
    Array.prototype.forEach.call(document.querySelectorAll("[data-job]"), function (row) {
      var state = row.getAttribute("data-state");
      if (state === "queued" || state === "running") { poll(row); }
    });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); }
  else { start(); }
}());
