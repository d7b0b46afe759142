// The create form: picking a custom date selects the "Custom date and time" choice for the user.
(function () {
  "use strict";
  var custom = document.querySelector('input[name="custom_expiry"]');
  var choice = document.querySelector('input[name="expiry"][value="custom"]');
  if (!custom || !choice) { return; }
  ["focus", "input", "change"].forEach(function (type) {
    custom.addEventListener(type, function () { choice.checked = true; });
  });
}());
