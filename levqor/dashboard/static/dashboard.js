// Levqor dashboard: liveness only. Every page reads, filters, paginates and acts without this
// script; it adds live updates (EventSource on a job, a refreshed table on the list), their pause
// control, and select-all. No framework, no inline handlers (the page's policy allows none).
"use strict";

(function () {
  const LIST_REFRESH_MS = 2000;

  function setupToggle(container, onChange) {
    const button = container.querySelector("[data-live-toggle]");
    const status = container.querySelector("[data-live-status]");
    let paused = false;
    container.hidden = false;
    button.addEventListener("click", function () {
      paused = !paused;
      button.setAttribute("aria-pressed", String(paused));
      button.textContent = paused ? "Resume live updates" : "Pause live updates";
      status.textContent = paused ? "Paused: nothing changes until you resume." : "Live again.";
      onChange(paused);
    });
    return status;
  }

  // The same page from the server, for the parts of this one that follow the job or the list.
  async function redraw(id) {
    let response;
    try {
      response = await fetch(window.location.href, { credentials: "same-origin" });
    } catch (error) {
      return false; // the server is away for a moment: the next change or tick tries again
    }
    if (!response.ok) { return false; }
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById(id);
    const target = document.getElementById(id);
    if (!fresh || !target) { return false; }
    target.replaceChildren(...fresh.childNodes);
    return true;
  }

  function followJob(container) {
    const url = container.dataset.jobStream;
    const FINISHED = ["succeeded", "failed", "cancelled"];
    const DELIVERY_REDRAW_MS = 3000; // a callback goes out just after the job ends
    let lastId = container.dataset.lastEvent || "0";
    let source = null;
    let pending = null;
    const badge = document.querySelector("[data-job-status]");
    const status = setupToggle(container, function (paused) {
      if (paused) { stop(); } else { start(); }
    });

    function stop() {
      if (source) { source.close(); source = null; }
    }

    // Several events in a burst (claimed, progress, succeeded) cost one redraw.
    function redrawSoon() {
      if (pending === null) {
        pending = window.setTimeout(function () { pending = null; redraw("job-detail"); }, 100);
      }
    }

    function ended() {
      container.dataset.finished = "true";
      container.querySelector("[data-live-toggle]").hidden = true;
      status.textContent = "This job has ended: nothing more will change but its callback deliveries.";
      stop();
      window.setTimeout(function () { redraw("job-detail"); }, DELIVERY_REDRAW_MS);
    }

    function start() {
      if (container.dataset.finished === "true") {
        container.querySelector("[data-live-toggle]").hidden = true;
        status.textContent = "This job has ended: nothing more will change but its callback deliveries.";
        return;
      }
      source = new EventSource(url + "?after=" + encodeURIComponent(lastId));
      source.onmessage = function (message) {
        const update = JSON.parse(message.data);
        lastId = message.lastEventId || lastId;
        badge.textContent = update.status;
        badge.className = "badge " + update.status;
        redrawSoon();
        if (FINISHED.indexOf(update.status) >= 0) { ended(); }
      };
      source.onerror = function () {
        // 204 (the job has ended) closes the stream; otherwise EventSource reconnects by itself.
        if (source && source.readyState === EventSource.CLOSED) { stop(); }
      };
    }

    start();
  }

  function refreshList(container) {
    const target = document.getElementById(container.dataset.liveRefresh);
    let paused = false;
    setupToggle(container, function (value) { paused = value; });
    async function refresh() {
      const anyChecked = target.querySelector("input[type=checkbox]:checked");
      if (!paused && !anyChecked && document.visibilityState === "visible") {
        if (await redraw(target.id)) { setupSelectAll(); }
      }
      window.setTimeout(refresh, LIST_REFRESH_MS);
    }
    window.setTimeout(refresh, LIST_REFRESH_MS);
  }

  function setupSelectAll() {
    document.querySelectorAll("[data-select-all]").forEach(function (box) {
      box.hidden = false;
      box.addEventListener("change", function () {
        const form = box.closest("form");
        form.querySelectorAll("input[name='" + box.dataset.selectAll + "']").forEach(function (item) {
          item.checked = box.checked;
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-job-stream]").forEach(followJob);
    document.querySelectorAll("[data-live-refresh]").forEach(refreshList);
    setupSelectAll();
  });
})();
