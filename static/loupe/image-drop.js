// Search with an image pasted (Ctrl+V) or dropped anywhere on the page: the file goes into the page's
// image form, which is then submitted as if it had been chosen with the file picker, so the upload takes
// the same checked path (size and format checks, throttling, logging) as any other.
(function () {
  "use strict";
  const form = document.querySelector("[data-image-form]");
  if (!form || typeof DataTransfer !== "function") return;
  const input = form.querySelector('input[type="file"]');
  const status = form.querySelector("[data-drop-status]");
  const overlay = document.querySelector("[data-drop-overlay]");
  const hint = form.querySelector("[data-drop-hint]");
  if (hint) hint.hidden = false;

  function imageFile(transfer) {
    if (!transfer) return null;
    return Array.from(transfer.files || []).find(function (file) { return file.type.startsWith("image/"); }) || null;
  }

  function searchWith(file, how) {
    const files = new DataTransfer();
    files.items.add(file);
    input.files = files.files;
    status.textContent = "Searching with the " + how + " image…";
    form.requestSubmit();
  }

  document.addEventListener("paste", function (event) {
    const file = imageFile(event.clipboardData);
    if (!file) return;  // text pasted into the search box stays text
    event.preventDefault();
    searchWith(file, "pasted");
  });

  function carriesFiles(event) {
    return event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  }
  let depth = 0;  // dragenter/dragleave fire for every element crossed; count them to know when it left
  document.addEventListener("dragenter", function (event) {
    if (!carriesFiles(event)) return;
    depth += 1;
    if (overlay) overlay.hidden = false;
  });
  document.addEventListener("dragleave", function (event) {
    if (!carriesFiles(event)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0 && overlay) overlay.hidden = true;
  });
  document.addEventListener("dragover", function (event) {
    if (carriesFiles(event)) event.preventDefault();  // allows the drop
  });
  document.addEventListener("drop", function (event) {
    if (!carriesFiles(event)) return;
    event.preventDefault();  // the browser would otherwise open the file in place of the page
    depth = 0;
    if (overlay) overlay.hidden = true;
    const file = imageFile(event.dataTransfer);
    if (file) searchWith(file, "dropped");
    else status.textContent = "That is not an image: drop a JPEG, PNG or WebP file.";
  });
})();
