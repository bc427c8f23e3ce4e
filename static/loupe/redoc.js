// Starts Redoc on /api/v1/redoc from a file, not an inline script (Content-Security-Policy).
// Search is off: Redoc runs it in a worker made from a blob: URL, which the policy does not allow.
(function () {
  "use strict";
  var container = document.getElementById("redoc-container");
  if (!container || !window.Redoc) return;
  var settings = container.dataset.settings ? JSON.parse(container.dataset.settings) : {};
  settings.disableSearch = true;
  settings.nonce = container.dataset.styleNonce; // put on the <style> elements Redoc writes
  window.Redoc.init(container.dataset.schemaUrl, settings, container);
})();
