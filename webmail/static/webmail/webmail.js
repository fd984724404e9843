// mailsuite webmail: live updates, selection, drag and drop, keyboard shortcuts.
// Pages work without this file; it only adds to them. The body is hx-boost'ed, so
// everything here is delegated from document and survives page swaps.
(function () {
  "use strict";

  var body = document.body;
  function $(selector, root) { return (root || document).querySelector(selector); }
  function $$(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  // --- Live updates: server-sent events from the change bus --------------------------
  var pending = null;
  var lastChange = { folders: {} };
  var dragging = false;  // messages are being dragged: refreshes wait (see refresh())

  function checkedUids() {
    return $$('#list input[name=uid]:checked').map(function (box) { return box.value; });
  }

  // Fetches `url` and puts its element #id in place of this page's, unless the page has
  // moved on meanwhile (another page, or this one re-rendered by the user's own action):
  // a late answer must never paint an older page over a newer one. A plain fetch, not
  // htmx.ajax: htmx queues every request without a source element on <body>, where the
  // navigation that follows a form's HX-Location waits too, and a newer queued request
  // would drop it (the user's Move or Delete would then seem to do nothing).
  function replaceFromServer(url, id, swap, gone) {
    var old = document.getElementById(id);
    if (!old) { return; }
    var here = location.href;
    function current() { return location.href === here && document.getElementById(id) === old; }
    fetch(url, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then(function (response) {
        if (response.status === 404 && gone && current()) { gone(); }
        return response.ok ? response.text() : null;
      })
      .then(function (text) {
        var fresh = text && current() && new DOMParser().parseFromString(text, "text/html").getElementById(id);
        if (fresh) { (swap || replaceAndProcess)(old, fresh); }
      })
      .catch(function () { /* the next change tries again */ });
  }
  function replaceAndProcess(old, fresh) {
    old.replaceWith(fresh);
    htmx.process(fresh);
  }

  function refreshTree() {
    var treeUrl = document.body.dataset.treeUrl;
    var main = $("#main"); var current = main && main.dataset.folder;
    if (treeUrl) { replaceFromServer(treeUrl + (current ? "?folder=" + encodeURIComponent(current) : ""), "tree"); }
  }

  // The list is swapped in the same task as the selection and focus are read and put
  // back, so boxes ticked while the request was under way are kept and a drag that
  // starts right after finds its rows ready.
  function swapList(old, fresh) {
    var checked = checkedUids();
    var focused = document.activeElement && old.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
    replaceAndProcess(old, fresh);
    checked.forEach(function (uid) {
      var box = $('#list input[name=uid][value="' + uid + '"]');
      if (box) { box.checked = true; markRow(box); }
    });
    pageReady(true);
    if (focused) { var link = $('#list a[href="' + focused.replace(/"/g, '\\"') + '"]'); if (link) { link.focus(); } }
    document.dispatchEvent(new CustomEvent("webmail:list-refreshed"));
  }

  function refresh() {
    // A list swapped under a drag takes the dragged row away and the drop is lost: the
    // news waits for the drop.
    if (dragging) { pending = setTimeout(refresh, 250); return; }
    pending = null;
    var change = lastChange;
    lastChange = { folders: {} };
    refreshTree();
    var here = location.pathname + location.search;
    if ($("#list")) {
      replaceFromServer(here, "list", swapList);
    } else if ($("#reader") && (change.any || change.folders[($("#main") || {dataset: {}}).dataset.folder])) {
      replaceFromServer(here, "message-state", null, showGone);
    }
  }

  function onChange(event) {
    var data = {};
    try { data = JSON.parse(event.data); } catch (e) { return; }
    if (data.folder === null || data.kind === "folder" || data.kind === "resync") { lastChange.any = true; }
    else { lastChange.folders[data.folder] = true; }
    if (!pending) { pending = setTimeout(refresh, 250); }
  }

  var source = null;
  function connect() {
    var url = document.body.dataset.eventsUrl;
    if (!url || source || !window.EventSource) { return; }
    source = new EventSource(url);
    source.addEventListener("change", onChange);
    source.addEventListener("open", function () { body.dataset.live = "on"; });
  }

  // The open message vanished (moved or deleted elsewhere): say so instead of failing silently.
  function showGone() {
    var notice = $("#live-notice");
    if (notice) { notice.textContent = notice.dataset.goneText || "This message was moved or deleted."; }
  }
  document.addEventListener("htmx:responseError", function (event) {
    if (event.detail.xhr.status === 404 && $("#reader")) { showGone(); }
  });

  // After a flag change or mark-read the tree's unread counts change: refresh them.
  document.addEventListener("htmx:afterRequest", function (event) {
    var element = event.detail.elt;
    if (element && element.hasAttribute && element.hasAttribute("data-mark-read") && event.detail.successful) {
      refreshTree();
    }
  });

  // --- Selection ------------------------------------------------------------------------
  function markRow(box) {
    var row = box.closest("tr");
    if (row) { row.classList.toggle("selected", box.checked); }
  }
  var lastClicked = null;
  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target.matches && target.matches("[data-select-all]")) {
      $$("#list input[name=uid]").forEach(function (box) { box.checked = target.checked; markRow(box); });
      return;
    }
    if (target.matches && target.matches("#list input[name=uid]")) {
      var boxes = $$("#list input[name=uid]");
      if (event.shiftKey && lastClicked && boxes.indexOf(lastClicked) >= 0) {
        var a = boxes.indexOf(lastClicked), b = boxes.indexOf(target);
        boxes.slice(Math.min(a, b), Math.max(a, b) + 1).forEach(function (box) { box.checked = target.checked; markRow(box); });
      }
      markRow(target);
      lastClicked = target;
    }
    if (target.closest && target.closest("[data-print]")) { window.print(); return; }
    var toggle = target.closest && target.closest("[data-menu-toggle]");
    if (toggle) {
      var sidebar = $("#sidebar");
      var open = sidebar.classList.toggle("open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    }
  });

  // --- Drag messages onto a folder ------------------------------------------------------
  document.addEventListener("dragstart", function (event) {
    var row = event.target.closest && event.target.closest("#list tr.message-row");
    if (!row) { return; }
    var box = $("input[name=uid]", row);
    if (!box) { return; }
    dragging = true;
    if (!box.checked) {
      $$("#list input[name=uid]:checked").forEach(function (other) { other.checked = false; markRow(other); });
      box.checked = true; markRow(box);
    }
    event.dataTransfer.setData("text/plain", checkedUids().join(","));
    event.dataTransfer.effectAllowed = "move";
  });
  document.addEventListener("dragover", function (event) {
    var link = event.target.closest && event.target.closest(".folder-link");
    if (link && $("#bulk-form")) { event.preventDefault(); link.classList.add("drop-over"); }
  });
  document.addEventListener("dragleave", function (event) {
    var link = event.target.closest && event.target.closest(".folder-link");
    if (link) { link.classList.remove("drop-over"); }
  });
  document.addEventListener("dragend", function () { dragging = false; });
  document.addEventListener("drop", function (event) {
    dragging = false;
    var link = event.target.closest && event.target.closest(".folder-link");
    var form = $("#bulk-form");
    if (!link || !form) { return; }
    event.preventDefault();
    link.classList.remove("drop-over");
    var select = $("select[name=target]", form);
    var button = $('button[name=action][value=move]', form);
    if (!select || !button || !checkedUids().length) { return; }
    select.value = link.dataset.folderId;
    // A click, not requestSubmit(button): the boosted form's request carries the button
    // that was clicked (action=move), and htmx learns it from the click.
    if (select.value === link.dataset.folderId) { button.click(); }
  });
  function makeRowsDraggable() {
    $$("#list tr.message-row").forEach(function (row) { row.setAttribute("draggable", "true"); });
  }

  // --- Keyboard shortcuts (Gmail's letters) ------------------------------------------------
  var cursor = -1;
  function rows() { return $$("#list tr.message-row"); }
  function moveCursor(step) {
    var all = rows();
    if (!all.length) { return; }
    if (cursor >= 0 && all[cursor]) { all[cursor].classList.remove("cursor"); }
    cursor = Math.max(0, Math.min(all.length - 1, cursor + step));
    all[cursor].classList.add("cursor");
    var link = $("a.open", all[cursor]);
    if (link) { link.focus(); }
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || event.target.isContentEditable) {
      if (event.key === "Escape") { event.target.blur(); }
      return;
    }
    var key = event.key;
    if ($("#list") && (key === "j" || key === "k")) { moveCursor(key === "j" ? 1 : -1); event.preventDefault(); return; }
    if ($("#list") && key === "x" && cursor >= 0) {
      var box = $("input[name=uid]", rows()[cursor]);
      if (box) { box.checked = !box.checked; markRow(box); }
      return;
    }
    if ($("#list") && (key === "o" || key === "Enter") && cursor >= 0) {
      var open = $("a.open", rows()[cursor]);
      if (open) { open.click(); event.preventDefault(); }
      return;
    }
    if (key === "#" && $("#list")) {
      if (checkedUids().length) { $('#bulk-form button[value=delete]').click(); }
      return;
    }
    var shortcut = $('[data-shortcut="' + (key === '"' ? "" : key) + '"]');
    if (!shortcut) { return; }
    event.preventDefault();
    if (shortcut.tagName === "INPUT") { shortcut.focus(); shortcut.select(); } else { shortcut.click(); }
  });

  function pageReady(keepCursor) {
    // A list refreshed by live updates keeps the keyboard's place; a new page starts over.
    var all = rows();
    if (keepCursor && cursor >= 0 && all.length) {
      cursor = Math.min(cursor, all.length - 1);
      all[cursor].classList.add("cursor");
    } else {
      cursor = -1;
    }
    makeRowsDraggable();
    connect();
  }
  document.addEventListener("htmx:load", function (event) {
    if (event.detail.elt === document.body) { pageReady(false); }
    else if (event.detail.elt.id === "list") { pageReady(true); }
  });
  document.addEventListener("webmail:list-refreshed", makeRowsDraggable);
  if (document.readyState !== "loading") { pageReady(); } else { document.addEventListener("DOMContentLoaded", pageReady); }
})();
