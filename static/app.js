// keydesk progressive enhancement. Every page works without this file;
// it adds the copy button, expiry presets, and guards against double submits.
"use strict";
(function () {
  function ready(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  ready(function () {
    // Copy button on the reveal page.
    var copy = document.getElementById("copy-key");
    var status = document.getElementById("copy-status");
    if (copy) {
      var field = document.getElementById(copy.getAttribute("data-copy-target"));
      copy.hidden = false;
      copy.addEventListener("click", function () {
        var value = field.value.trim();
        var done = function () { status.textContent = "Copied to clipboard."; };
        var fallback = function () {
          field.focus();
          field.select();
          try {
            if (document.execCommand("copy")) { done(); return; }
          } catch (e) { /* fall through */ }
          status.textContent = "Copy failed: select the key and press Ctrl+C.";
        };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(value).then(done, fallback);
        } else {
          fallback();
        }
      });
      // Leaving the reveal without confirming asks once.
      var confirmed = false;
      var doneLink = document.getElementById("copied-done");
      if (doneLink) doneLink.addEventListener("click", function () { confirmed = true; });
      // Confirming the new key is deployed (rotation) also means it was copied.
      var revokeOld = document.getElementById("revoke-old");
      if (revokeOld) revokeOld.addEventListener("click", function () { confirmed = true; });
      window.addEventListener("beforeunload", function (e) {
        if (!confirmed) { e.preventDefault(); e.returnValue = ""; }
      });
    }

    // Copy button of a claim link (not a secret: no leave-page guard).
    var copyLink = document.getElementById("copy-link");
    if (copyLink && navigator.clipboard) {
      var linkField = document.getElementById(copyLink.getAttribute("data-copy-target"));
      copyLink.hidden = false;
      copyLink.addEventListener("click", function () {
        navigator.clipboard.writeText(linkField.value).then(function () {
          status.textContent = "Link copied.";
        }, function () {
          status.textContent = "Copy failed: select the link and copy it.";
        });
      });
    }

    // Expiry presets on the add-key form.
    var presets = document.getElementById("expiry-presets");
    if (presets) {
      var date = document.getElementById("key-date-expire");
      var expire = document.getElementById("key-expire");
      presets.hidden = false;
      presets.addEventListener("click", function (e) {
        var b = e.target.closest("button[data-days]");
        if (!b) return;
        var days = parseInt(b.getAttribute("data-days"), 10);
        if (days === 0) { expire.checked = false; date.value = ""; return; }
        var d = new Date();
        d.setUTCDate(d.getUTCDate() + days);
        date.value = d.toISOString().slice(0, 10);
        expire.checked = true;
      });
      date.addEventListener("change", function () { if (date.value) expire.checked = true; });
    }

    // A second click on a submit button does nothing (the server also guards).
    document.querySelectorAll("form[method=post]").forEach(function (f) {
      f.addEventListener("submit", function () {
        setTimeout(function () {
          f.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
        }, 0);
      });
    });
  });
})();
