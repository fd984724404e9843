// mailsuite webmail: the compose page. Drafts are saved every few seconds while the
// form changes (POST action=autosave, answered with the new draft's folder:uid, which
// replaces the old one), attachments over the size limit are caught before upload, and a
// form with files goes up with a progress bar (XMLHttpRequest upload progress events).
// The page works without this file. The body is hx-boost'ed, so it looks for the
// form on each tick instead of binding once.
(function () {
  "use strict";

  var lastSaved = null;
  var saving = false;
  var boundForm = null;

  function form() { return document.querySelector("form[data-autosave]"); }

  function snapshot(f) {
    var data = new FormData(f);
    data.delete("attachments");
    data.delete("csrfmiddlewaretoken");
    var parts = [];
    data.forEach(function (value, key) { parts.push(key + "=" + value); });
    return parts.join("&");
  }

  // The form as the server sent it (default values), so typing that happens before
  // this script first looks still counts as a change.
  function pristine(f) {
    var parts = [];
    Array.prototype.forEach.call(f.elements, function (element) {
      if (!element.name || element.type === "file" || element.type === "submit" || element.name === "csrfmiddlewaretoken") { return; }
      if (element.type === "checkbox") {
        if (element.defaultChecked) { parts.push(element.name + "=" + element.value); }
      } else if (element.tagName === "SELECT") {
        Array.prototype.forEach.call(element.options, function (option) {
          if (option.defaultSelected) { parts.push(element.name + "=" + option.value); }
        });
      } else {
        parts.push(element.name + "=" + element.defaultValue);
      }
    });
    return parts.join("&");
  }

  function bind(f) {
    if (boundForm === f) { return; }
    boundForm = f;
    lastSaved = pristine(f);  // nothing typed yet: nothing to save
  }

  // Files over the size limit (all of them together) are refused as they are picked or
  // dropped: said beside the picker, before anything is sent, and let go.
  document.addEventListener("change", function (event) {
    var picker = event.target;
    var f = picker.form;
    if (picker.type !== "file" || !f || !f.matches("form[data-autosave]")) { return; }
    var limit = parseInt(f.dataset.sizeLimit, 10) || 0;
    var total = 0, names = [];
    Array.prototype.forEach.call(picker.files, function (file) { total += file.size; names.push(file.name); });
    var error = f.querySelector(".upload-error");
    if (limit && total > limit) {
      error.textContent = f.dataset.tooBigText + " (" + names.join(", ") + ")";
      error.hidden = false;
      picker.value = "";
    } else if (error) {
      error.hidden = true;
      error.textContent = "";
    }
  });

  function hasFiles(f) {
    var picker = f.querySelector("input[type=file]");
    return !!(picker && picker.files && picker.files.length);
  }

  // Send the form with its files and show how much has gone up. The server answers a
  // success with HX-Location (where to go: its notice is shown there) and a refusal with
  // the compose page and its errors, whose content replaces this one's.
  function sendWithProgress(f, action) {
    var data = new FormData(f);
    data.set("action", action);
    var box = f.querySelector(".upload-progress");
    var bar = box.querySelector("progress");
    var percent = box.querySelector(".upload-percent");
    box.hidden = false;
    bar.value = 0;
    saving = true;
    var buttons = f.querySelectorAll("button[type=submit]");
    Array.prototype.forEach.call(buttons, function (button) { button.disabled = true; });
    var xhr = new XMLHttpRequest();
    xhr.open("POST", f.getAttribute("action"));
    xhr.setRequestHeader("HX-Request", "true");
    xhr.upload.addEventListener("progress", function (event) {
      if (!event.lengthComputable) { return; }
      bar.value = Math.round(event.loaded * 100 / event.total);
      percent.textContent = bar.value + "%";
      f.dataset.uploaded = bar.value;
    });
    function failed(text) {
      box.hidden = true;
      saving = false;
      Array.prototype.forEach.call(buttons, function (button) { button.disabled = false; });
      var error = f.querySelector(".upload-error");
      error.textContent = text;
      error.hidden = false;
    }
    xhr.addEventListener("load", function () {
      var next = xhr.getResponseHeader("HX-Location");
      if (xhr.status < 300 && next) { window.location.assign(next); return; }
      var page = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var fresh = page.getElementById("main");
      var main = document.getElementById("main");
      if (xhr.status >= 400 && fresh && main) {
        main.replaceWith(fresh);
        if (window.htmx) { window.htmx.process(fresh); }
        saving = false;
        return;
      }
      failed(f.dataset.uploadFailedText + " (" + xhr.status + ")");
    });
    xhr.addEventListener("error", function () { failed(f.dataset.uploadFailedText); });
    xhr.send(data);
  }

  function autosave() {
    var f = form();
    if (!f) { boundForm = null; return; }
    bind(f);
    var now = snapshot(f);
    if (saving || now === lastSaved) { return; }
    saving = true;
    var data = new FormData(f);
    data.delete("attachments");
    data.set("action", "autosave");
    fetch(f.getAttribute("action"), { method: "POST", body: data, credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (answer) {
        if (!answer.draft) { return; }
        var draftField = f.querySelector("input[name=draft]");
        var sourceField = f.querySelector("input[name=source]");
        var oldDraft = draftField.value;
        draftField.value = answer.draft;
        // Kept attachments now live in the new draft, under its part numbers.
        if (sourceField && (sourceField.value === oldDraft || !sourceField.value || answer.keep.length)) {
          var boxes = Array.prototype.filter.call(f.querySelectorAll("input[name=keep]"), function (box) { return box.checked; });
          if (boxes.length === answer.keep.length) {
            sourceField.value = answer.draft;
            boxes.forEach(function (box, i) { box.value = answer.keep[i]; });
            Array.prototype.forEach.call(f.querySelectorAll("input[name=keep]"), function (box) {
              if (!box.checked) { box.closest("label").remove(); }
            });
          }
        }
        lastSaved = now;
        var status = f.querySelector(".autosave-status");
        if (status) { status.textContent = f.dataset.autosavedText + " " + new Date().toLocaleTimeString(); }
      })
      .catch(function () { /* the next tick tries again */ })
      .then(function () { saving = false; });
  }

  // Address book suggestions for the address being typed (after the last comma). Each
  // option holds the whole field's value, so picking one keeps the addresses before it.
  var suggestTimer = null;
  document.addEventListener("input", function (event) {
    var field = event.target;
    if (!field.dataset || !field.dataset.addresses) { return; }
    var f = field.form;
    var list = document.getElementById("contact-suggestions");
    if (!f || !list || !f.dataset.suggestUrl) { return; }
    window.clearTimeout(suggestTimer);
    suggestTimer = window.setTimeout(function () {
      var value = field.value;
      var cut = value.lastIndexOf(",");
      var before = cut >= 0 ? value.slice(0, cut + 1) + " " : "";
      var typed = value.slice(cut + 1).trim();
      if (typed.length < 1) { list.textContent = ""; return; }
      fetch(f.dataset.suggestUrl + "?q=" + encodeURIComponent(typed), { credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (answer) {
          list.textContent = "";
          answer.contacts.forEach(function (contact) {
            var option = document.createElement("option");
            option.value = before + contact.text + ", ";
            option.label = contact.text;
            list.appendChild(option);
          });
        })
        .catch(function () { /* no suggestions this time */ });
    }, 150);
  });

  // Undo send: the form goes to the server only after data-undo-seconds, and until then
  // an Undo button cancels it (nothing has left the browser yet).
  document.addEventListener("submit", function (event) {
    var f = event.target;
    if (!f.matches || !f.matches("form[data-autosave]") || f.dataset.sending === "now") { return; }
    var submitter = event.submitter;
    var seconds = parseInt(f.dataset.undoSeconds, 10) || 0;
    if (submitter && submitter.value === "save" && hasFiles(f) && window.XMLHttpRequest && window.DOMParser) {
      event.preventDefault();
      sendWithProgress(f, "save");
      return;
    }
    if (!submitter || submitter.value !== "send" || seconds <= 0) { return; }
    event.preventDefault();
    var status = f.querySelector(".undo-send");
    var countdown = seconds;
    status.hidden = false;
    status.querySelector(".undo-text").textContent = f.dataset.sendingText.replace("{seconds}", countdown);
    saving = true;  // no autosave while it goes
    var tick = window.setInterval(function () {
      countdown -= 1;
      if (countdown > 0) {
        status.querySelector(".undo-text").textContent = f.dataset.sendingText.replace("{seconds}", countdown);
        return;
      }
      window.clearInterval(tick);
      status.hidden = true;
      if (hasFiles(f) && window.XMLHttpRequest && window.DOMParser) { sendWithProgress(f, "send"); return; }
      var action = document.createElement("input");
      action.type = "hidden"; action.name = "action"; action.value = "send";
      f.appendChild(action);
      f.dataset.sending = "now";
      f.submit();
    }, 1000);
    status.querySelector("button").onclick = function () {
      window.clearInterval(tick);
      status.hidden = true;
      saving = false;
    };
  });

  // Files dropped anywhere on the form join the picker's.
  document.addEventListener("dragover", function (event) {
    if (event.target.closest && event.target.closest("form[data-autosave]")) { event.preventDefault(); }
  });
  document.addEventListener("drop", function (event) {
    var f = event.target.closest && event.target.closest("form[data-autosave]");
    if (!f || !event.dataTransfer || !event.dataTransfer.files.length) { return; }
    event.preventDefault();
    var picker = f.querySelector("input[type=file]");
    var all = new DataTransfer();
    Array.prototype.forEach.call(picker.files, function (file) { all.items.add(file); });
    Array.prototype.forEach.call(event.dataTransfer.files, function (file) { all.items.add(file); });
    picker.files = all.files;
    picker.dispatchEvent(new Event("change", { bubbles: true }));
  });

  // Bind soon after the page appears; save at the form's period (data-autosave, ms).
  var elapsed = 0;
  window.setInterval(function () {
    var f = form();
    if (!f) { boundForm = null; elapsed = 0; return; }
    bind(f);
    elapsed += 500;
    if (elapsed >= (parseInt(f.dataset.autosave, 10) || 5000)) { elapsed = 0; autosave(); }
  }, 500);
})();
