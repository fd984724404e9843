// Compose: ask the server which recipients can receive encrypted mail whenever the
// recipients, the toggles or the kind change, and say so next to the toggles.
(function () {
  "use strict";
  function setup() {
    var box = document.querySelector(".secmail-compose");
    if (!box) return;
    var form = box.closest("form");
    var status = box.querySelector("[data-readiness]");
    var timer = null;
    function field(name) { var el = form.elements[name]; return el ? el.value : ""; }
    function check() {
      var encrypt = form.elements.secmail_encrypt.checked;
      var sign = form.elements.secmail_sign.checked;
      if (!encrypt && !sign) { status.textContent = ""; box.removeAttribute("data-ready"); return; }
      var params = new URLSearchParams({kind: field("secmail_kind"), to: field("to"), cc: field("cc"), bcc: field("bcc")});
      fetch(box.dataset.readinessUrl + "?" + params.toString(), {credentials: "same-origin"})
        .then(function (r) { return r.json(); })
        .then(function (data) {
          var lines = [];
          if (encrypt) {
            var missing = Object.keys(data.recipients).filter(function (a) { return !data.recipients[a]; });
            box.dataset.ready = missing.length ? "no" : "yes";
            lines.push(missing.length ? box.dataset.missingText.replace("{addresses}", missing.join(", ")) : box.dataset.allText);
          }
          if (sign && !data.can_sign) lines.push(box.dataset.noSignText);
          status.textContent = lines.join(" ");
        })
        .catch(function () { status.textContent = ""; });
    }
    function soon() { clearTimeout(timer); timer = setTimeout(check, 300); }
    ["to", "cc", "bcc"].forEach(function (name) { if (form.elements[name]) form.elements[name].addEventListener("input", soon); });
    ["secmail_sign", "secmail_encrypt", "secmail_kind"].forEach(function (name) { form.elements[name].addEventListener("change", check); });
    check();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup); else setup();
})();
