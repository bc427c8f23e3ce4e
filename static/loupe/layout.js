// The layout the results were seen in, read from the rendered grid: the cards in each row (cards whose
// tops line up share a row; a justified row holds as many as their aspect ratios fit, so the window width
// alone does not say it) and the rows on screen when they were first shown. Sent once per search event,
// as that search's first beacon (feedback.layout); examination in a grid depends on the row and the column,
// not only the rank. Only a grid that starts at position 1 is described (a first page and the batches
// "Load more" appends to it), so a card's rank gives its (row, column).
(function () {
  "use strict";
  const grid = document.querySelector("ol.grid[data-layout-url]");
  if (!grid) return;
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const reported = new Set();

  function rowsOf(cards) {
    const rows = [];  // [{top, bottom, size}], top to bottom
    cards.forEach(function (card) {
      const box = card.getBoundingClientRect();
      const last = rows[rows.length - 1];
      // A card starts a new row when its top is below the previous row's top (flex-wrap puts it there).
      if (last && Math.abs(box.top - last.top) < 2) {
        last.size += 1;
        last.bottom = Math.max(last.bottom, box.bottom);
      } else {
        rows.push({ top: box.top, bottom: box.bottom, size: 1 });
      }
    });
    return rows;
  }

  function onScreen(rows) {
    let first = 0, last = 0;
    rows.forEach(function (row, index) {
      if (row.bottom > 0 && row.top < window.innerHeight) {
        if (!first) first = index + 1;
        last = index + 1;
      }
    });
    return first ? [first, last] : null;
  }

  function report() {
    const cards = Array.prototype.slice.call(grid.querySelectorAll("li.card"));
    if (!cards.length) return;
    const firstLink = cards[0].querySelector("a.result-link");
    if (!firstLink || firstLink.dataset.position !== "1") return;
    const rows = rowsOf(cards);
    const layout = { columns: rows.map(function (row) { return row.size; }) };
    const seen = onScreen(rows);
    if (seen) layout.rows_on_screen = seen;
    cards.forEach(function (card) {
      const eventId = card.dataset.eventId;
      if (!eventId || reported.has(eventId)) return;
      reported.add(eventId);
      const body = new URLSearchParams();
      body.append("event_id", eventId);
      body.append("layout", JSON.stringify(layout));
      body.append("csrfmiddlewaretoken", csrf);  // sendBeacon cannot send headers
      const url = grid.dataset.layoutUrl;
      if (!(navigator.sendBeacon && navigator.sendBeacon(url, body))) {
        fetch(url, { method: "POST", body: body, keepalive: true, credentials: "same-origin" });
      }
    });
  }

  // After the first layout pass (the cards' sizes come from their width/height attributes and aspect classes,
  // so images need not have loaded), and for each batch "Load more" appends.
  window.requestAnimationFrame(function () { window.requestAnimationFrame(report); });
  document.addEventListener("loupe:results-added", function () { window.requestAnimationFrame(report); });
})();
