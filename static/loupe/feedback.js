// Feedback from the pages: result clicks (navigator.sendBeacon, so they survive leaving the page),
// time spent on an image reached from results (a second beacon when that page is hidden), and
// ratings without a reload. Every item carries its own client id, so a resend is never counted twice.
(function () {
  "use strict";
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const clickUrl = document.body.dataset.clickUrl;
  const rateUrl = document.body.dataset.rateUrl;

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  function formOf(fields) {
    const form = new URLSearchParams();
    Object.keys(fields).forEach(function (name) {
      const value = fields[name];
      if (value !== undefined && value !== null && value !== "") form.append(name, value);
    });
    form.append("csrfmiddlewaretoken", csrf);  // sendBeacon cannot send headers; Django reads the form field
    return form;
  }

  function sendClick(fields) {
    const body = formOf(fields);
    if (!(navigator.sendBeacon && navigator.sendBeacon(clickUrl, body))) {
      fetch(clickUrl, { method: "POST", body: body, keepalive: true, credentials: "same-origin" });
    }
  }

  // --- clicks on results ---------------------------------------------------------------------------
  // A result opened (its page, or the lightbox): one click per result link, whichever way it was opened.
  // Each card carries its own batch's event id, so a result loaded by "Load more" is credited to that batch.
  function recordClick(link) {
    const list = link.closest("[data-event-id]");
    if (!list || !list.dataset.eventId) return;
    if (link.dataset.clickId) return;  // this link's click is already sent
    const clickId = newId();
    link.dataset.clickId = clickId;
    sendClick({
      event_id: list.dataset.eventId, image_id: link.dataset.imageId, position: link.dataset.position,
      client_id: clickId,
    });
    // The image page learns where it came from, to report dwell time and tie its ratings to the search.
    const target = new URL(link.href, window.location.href);
    target.searchParams.set("event", list.dataset.eventId);
    target.searchParams.set("pos", link.dataset.position);
    target.searchParams.set("click", clickId);
    link.href = target.toString();
  }
  window.loupeFeedback = { recordClick: recordClick };

  function onResultActivated(event) {
    const link = event.target.closest("a.result-link");
    if (link) recordClick(link);
  }
  document.addEventListener("click", onResultActivated);
  document.addEventListener("auxclick", onResultActivated);  // middle click: a new tab is still a click

  // --- dwell time on an image page reached from results ------------------------------------------------
  const origin = document.querySelector("[data-came-from-event]");
  if (origin) {
    const shownAt = performance.now();
    let reported = false;
    const report = function () {
      if (reported) return;
      reported = true;
      sendClick({
        event_id: origin.dataset.cameFromEvent, image_id: origin.dataset.imageId,
        position: origin.dataset.cameFromPosition, client_id: origin.dataset.cameFromClick,
        dwell_ms: Math.round(performance.now() - shownAt),
      });
    };
    window.addEventListener("pagehide", report);
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "hidden") report();
    });
  }

  // --- ratings ---------------------------------------------------------------------------------------------
  function rate(button) {
    const group = button.closest("[data-rate-image]");
    const list = button.closest("[data-event-id]");
    const status = group.querySelector(".rate-status");
    const fields = {
      image_id: group.dataset.rateImage, value: button.dataset.value, scale: button.dataset.scale || "thumbs",
      event_id: (list && list.dataset.eventId) || group.dataset.rateEvent || "", client_id: newId(),
    };
    const attempt = function (retriesLeft) {
      return fetch(rateUrl, {
        method: "POST", body: formOf(fields), credentials: "same-origin",
        headers: { "X-CSRFToken": csrf, Accept: "application/json" },
      }).then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      }).catch(function (error) {
        if (retriesLeft > 0) return attempt(retriesLeft - 1);  // same client id: a resend is not doubled
        throw error;
      });
    };
    status.textContent = "Saving…";
    attempt(1).then(function (result) {
      if (!result.ok) { status.textContent = result.body.error ? result.body.error.message : "Not saved."; return; }
      group.querySelectorAll("[data-value]").forEach(function (other) {
        other.setAttribute("aria-pressed", other === button ? "true" : "false");
      });
      status.textContent = "Thanks, saved.";
    }).catch(function () { status.textContent = "Not saved: no connection."; });
  }
  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-value]");
    if (button && button.closest("[data-rate-image]")) rate(button);
  });
})();
