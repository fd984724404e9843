// Compose: ask the server which recipients can receive encrypted mail whenever the
// recipients, the toggles or the kind change, and say so next to the toggles. Recipients
// without a known key are looked up in their Web Key Directory (lookup=1) when encryption
// is turned on and when a recipient field is left or changed, not at every keystroke.
(function () {
  "use strict";
  function setup() {
    var box = document.querySelector(".secmail-compose");
    if (!box) return;
    var form = box.closest("form");
    var status = box.querySelector("[data-readiness]");
    var timer = null;
    var asked = 0;  // only the answer to the latest question is shown (a WKD lookup may be slow)
    function field(name) { var el = form.elements[name]; return el ? el.value : ""; }
    function check(lookup) {
      var encrypt = form.elements.secmail_encrypt.checked;
      var sign = form.elements.secmail_sign.checked;
      if (!encrypt && !sign) { status.textContent = ""; box.removeAttribute("data-ready"); return; }
      // lookup=1: the server looks recipients without a key up in their Web Key Directory.
      var params = new URLSearchParams({kind: field("secmail_kind"), to: field("to"), cc: field("cc"), bcc: field("bcc"),
                                        lookup: encrypt && lookup === true ? "1" : "0"});
      var mine = ++asked;
      if (encrypt && lookup === true) status.textContent = box.dataset.checkingText;
      fetch(box.dataset.readinessUrl + "?" + params.toString(), {credentials: "same-origin"})
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (mine !== asked) return;
          var lines = [];
          var kind = form.elements.secmail_kind;
          if (encrypt && data.alternative && !kindChosen) {
            // every recipient has a key of the other kind (e.g. a harvested S/MIME certificate)
            kind.value = data.alternative;
            check(false);
            return;
          }
          if (encrypt) {
            var missing = Object.keys(data.recipients).filter(function (a) { return !data.recipients[a]; });
            box.dataset.ready = missing.length ? "no" : "yes";
            lines.push(missing.length ? box.dataset.missingText.replace("{addresses}", missing.join(", ")) : box.dataset.allText);
          }
          if (sign && !data.can_sign) lines.push(box.dataset.noSignText);
          status.textContent = lines.join(" ");
        })
        .catch(function () { if (mine === asked) status.textContent = ""; });
    }
    function soon() { clearTimeout(timer); timer = setTimeout(check, 300); }
    function withLookup() { clearTimeout(timer); check(true); }
    ["to", "cc", "bcc"].forEach(function (name) {
      if (!form.elements[name]) return;
      form.elements[name].addEventListener("input", soon);
      form.elements[name].addEventListener("change", withLookup);
    });
    var kindChosen = false;  // the user picked the kind: never switch it for them
    form.elements.secmail_kind.addEventListener("change", function () { kindChosen = true; });
    ["secmail_sign", "secmail_encrypt", "secmail_kind"].forEach(function (name) { form.elements[name].addEventListener("change", withLookup); });
    check(true);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup); else setup();
})();
