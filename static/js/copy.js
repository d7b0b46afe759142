// The token reveal: select the value on focus, copy it with one click, and forget it when the page is left.
// Progressive enhancement: without JavaScript the value is still in a read-only field to select and copy.
(function () {
  "use strict";

  document.querySelectorAll("[data-select-on-focus]").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
    // A click after focus would move the caret and drop the selection.
    input.addEventListener("mouseup", function (event) { event.preventDefault(); });
  });

  var status = document.getElementById("copy-status");

  // The sentences come translated from the page (data-* attributes); English is only the fallback.
  function announce(key, fallback) {
    if (status) { status.textContent = status.getAttribute("data-" + key) || fallback; }
  }

  function fallbackCopy(input) {
    input.focus();
    input.select();
    try {
      return document.execCommand("copy");
    } catch (error) {
      return false;
    }
  }

  document.querySelectorAll("[data-copy-target]").forEach(function (button) {
    var input = document.getElementById(button.getAttribute("data-copy-target"));
    if (!input) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      var done = function () {
        button.textContent = button.getAttribute("data-copied-label") || "Copied";
        announce("copied", "Copied to the clipboard.");
      };
      var failed = function () {
        input.focus();
        input.select();
        announce("failed", "Copying did not work here: the value is selected, press Ctrl+C.");
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, function () {
          if (fallbackCopy(input)) { done(); } else { failed(); }
        });
      } else if (fallbackCopy(input)) {
        done();
      } else {
        failed();
      }
    });
  });

  // Leaving the page (link, back, reload) wipes the value from the DOM, so the browser's back-forward
  // cache cannot bring it back on screen. The server never sends it again.
  window.addEventListener("pagehide", function () {
    document.querySelectorAll("[data-reveal]").forEach(function (row) {
      row.querySelectorAll("input").forEach(function (input) { input.value = ""; });
      row.querySelectorAll("button").forEach(function (button) { button.hidden = true; });
    });
    announce("gone", "The value is no longer shown.");
  });
}());
