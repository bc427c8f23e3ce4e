// "Load more": the next page's results appended to this one, in place of a page change. The next page is
// fetched as the plain "Next" link would load it, so the server serves and logs it exactly as a page:
// its own search event, positions continuing this page's (13-24 after 1-12). Each appended card carries
// that event's id, so its clicks and ratings are credited to the batch it was shown in. Without
// JavaScript the "Next" link remains.
(function () {
  "use strict";
  const pager = document.querySelector("[data-pager]");
  const grid = document.querySelector("ol.grid");
  if (!pager || !grid) return;
  let next = pager.querySelector('a[rel="next"]');
  if (!next) return;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "load-more";
  button.textContent = "Load more";
  const status = document.createElement("span");
  status.className = "muted";
  status.setAttribute("role", "status");
  pager.append(button, status);
  const lastPosition = document.querySelector("[data-last-position]");

  function fail(message) {
    button.disabled = false;
    button.textContent = "Load more";
    status.textContent = message;
  }

  button.addEventListener("click", function () {
    button.disabled = true;
    button.textContent = "Loading…";
    status.textContent = "";
    fetch(next.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        return response.text().then(function (html) { return { ok: response.ok, html: html }; });
      })
      .then(function (result) {
        const page = new DOMParser().parseFromString(result.html, "text/html");
        const cards = page.querySelectorAll("ol.grid > li.card");
        if (!result.ok || cards.length === 0) {
          const alert = page.querySelector('[role="alert"]');
          fail(alert ? alert.textContent : "No more results could be loaded.");
          return;
        }
        const batch = document.createDocumentFragment();
        cards.forEach(function (card) { batch.append(document.adoptNode(card)); });
        const first = batch.firstElementChild;
        grid.append(batch);
        const shown = grid.querySelectorAll("li.card");
        if (lastPosition) {
          lastPosition.textContent = shown[shown.length - 1].querySelector("a.result-link").dataset.position;
        }
        document.dispatchEvent(new CustomEvent("loupe:results-added", { detail: { root: grid } }));
        const further = page.querySelector('[data-pager] a[rel="next"]');
        if (further) {
          next.href = further.getAttribute("href");
          button.disabled = false;
          button.textContent = "Load more";
        } else {
          next.remove();
          button.remove();
        }
        status.textContent = cards.length + " more results.";
        first.querySelector("a.result-link").focus();  // a keyboard user carries on at the first new result
      })
      .catch(function () { fail("No connection: try again."); });
  });
})();
