// The lightbox: a larger view of a result without leaving the results. A modal <dialog>, so the browser
// traps focus in it and closes it on Esc; left and right arrows step through the results shown (batches
// added by "Load more" included). Opening a result counts as one click on it (feedback.js), as opening its
// page does; stepping with the arrows does not, so browsing does not inflate the click-through rate.
(function () {
  "use strict";
  const dialog = document.querySelector("[data-lightbox]");
  if (!dialog || typeof dialog.showModal !== "function") return;  // no dialog support: the links still work
  const image = dialog.querySelector("[data-lightbox-image]");
  const caption = dialog.querySelector("[data-lightbox-caption]");
  const count = dialog.querySelector("[data-lightbox-count]");
  const similar = dialog.querySelector("[data-lightbox-similar]");
  const open = dialog.querySelector("[data-lightbox-open]");
  const steps = dialog.querySelectorAll("[data-lightbox-step]");
  const searchUrl = document.querySelector("form.search-form").getAttribute("action") || "/";
  let cards = [];
  let index = -1;
  let opener = null;

  function show(at) {
    index = at;
    const card = cards[at];
    const link = card.querySelector("a.result-link");
    const thumb = link.querySelector("img");
    const text = card.querySelector(".caption");
    image.src = card.dataset.full;
    image.alt = thumb.alt;
    caption.textContent = text ? text.textContent : thumb.alt;
    count.textContent = "Result " + link.dataset.position + " (" + (at + 1) + " of " + cards.length + ")";
    similar.href = searchUrl + "?like=" + encodeURIComponent(link.dataset.imageId);
    open.href = link.href;
    steps.forEach(function (button) {
      const next = at + Number(button.dataset.lightboxStep);
      button.disabled = next < 0 || next >= cards.length;
    });
  }

  function step(by) {
    const next = index + by;
    if (next >= 0 && next < cards.length) show(next);
  }

  function openAt(card, button) {
    cards = Array.from(document.querySelectorAll("ol.grid > li.card"));
    const link = card.querySelector("a.result-link");
    if (window.loupeFeedback) window.loupeFeedback.recordClick(link);
    opener = button;
    show(cards.indexOf(card));
    dialog.showModal();
    dialog.querySelector("[data-lightbox-close]").focus();
  }

  function reveal(root) {
    root.querySelectorAll("[data-enlarge]").forEach(function (button) { button.hidden = false; });
  }
  reveal(document);
  document.addEventListener("loupe:results-added", function (event) { reveal(event.detail.root); });

  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-enlarge]");
    if (button) openAt(button.closest("li.card"), button);
  });
  dialog.addEventListener("keydown", function (event) {
    if (event.key === "ArrowLeft") { step(-1); event.preventDefault(); }
    if (event.key === "ArrowRight") { step(1); event.preventDefault(); }
  });
  steps.forEach(function (button) {
    button.addEventListener("click", function () { step(Number(button.dataset.lightboxStep)); });
  });
  dialog.querySelector("[data-lightbox-close]").addEventListener("click", function () { dialog.close(); });
  dialog.addEventListener("click", function (event) {
    if (event.target === dialog) dialog.close();  // a click on the backdrop
  });
  dialog.addEventListener("close", function () {
    // Back to the result last shown, so a keyboard user carries on from where they were.
    const shown = cards[index];
    const target = shown ? shown.querySelector("[data-enlarge]") : opener;
    if (target) target.focus();
  });
})();
