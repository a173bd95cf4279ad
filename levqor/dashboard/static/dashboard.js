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

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function followJob(container) {
    const url = container.dataset.jobStream;
    let lastId = container.dataset.lastEvent || "0";
    let source = null;
    const badge = document.querySelector("[data-job-status]");
    const progress = document.querySelector("[data-job-progress]");
    const timeline = document.querySelector("[data-job-timeline]");
    const status = setupToggle(container, function (paused) {
      if (paused) { stop(); } else { start(); }
    });

    function stop() {
      if (source) { source.close(); source = null; }
    }

    function start() {
      if (container.dataset.finished === "true") {
        container.querySelector("[data-live-toggle]").hidden = true;
        status.textContent = "This job has ended: nothing more will change.";
        return;
      }
      source = new EventSource(url + "?after=" + encodeURIComponent(lastId));
      source.onmessage = function (message) {
        const update = JSON.parse(message.data);
        lastId = message.lastEventId || lastId;
        badge.textContent = update.status;
        badge.className = "badge " + update.status;
        if (update.progress) {
          progress.textContent = "";
          const code = document.createElement("code");
          code.textContent = JSON.stringify(update.progress);
          progress.appendChild(code);
        }
        const event = update.event;
        const row = document.createElement("tr");
        row.append(
          cell(event.at), cell(event.type), cell((event.from_status || "–") + " → " + event.to_status),
          cell(String(event.attempt)), cell(event.detail ? JSON.stringify(event.detail) : "")
        );
        timeline.appendChild(row);
        if (["succeeded", "failed", "cancelled"].indexOf(update.status) >= 0) {
          container.dataset.finished = "true";
          status.textContent = "This job has ended: reload for its result and deliveries.";
          stop();
        }
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
        const response = await fetch(window.location.href, { credentials: "same-origin" });
        if (response.ok) {
          const page = new DOMParser().parseFromString(await response.text(), "text/html");
          const fresh = page.getElementById(target.id);
          if (fresh) { target.replaceChildren(...fresh.childNodes); setupSelectAll(); }
        }
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
