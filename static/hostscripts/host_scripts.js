/*
 * The host page's Scripts block: while a run is pending, ask GET /api/v1/hosts/<id>/scripts/
 * (session auth) every few seconds and update the rows in place: status, exit code, message,
 * output. A file, not an inline script, so the Content-Security-Policy can forbid inline ones.
 * Everything from the server is written with textContent, never as HTML.
 */
(function () {
  "use strict";

  var INTERVAL_MS = 2500;
  var LABELS = { pending: "Pending", ran: "Ran", error: "Error", cancelled: "Cancelled" };
  var DEVICE_KINDS = { lock: true, unlock: true, wipe: true };

  var section = document.getElementById("host-scripts");
  if (!section || !section.dataset.runsUrl) {
    return;
  }
  var table = document.getElementById("script-runs");

  function pendingRows() {
    return table ? table.querySelectorAll('tbody tr[data-status="pending"]') : [];
  }

  function rowFor(executionId) {
    var rows = table ? table.tBodies[0].rows : [];
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].dataset.executionId === executionId) {
        return rows[i];
      }
    }
    return null;
  }

  function setText(row, selector, text) {
    var el = row.querySelector(selector);
    if (el) {
      el.textContent = text;
    }
  }

  function update(row, run) {
    row.dataset.status = run.status;
    var badge = row.querySelector(".run-status");
    if (badge) {
      badge.className = "run-status run-status-" + run.status;
      badge.textContent = LABELS[run.status] || run.status;
    }
    setText(row, ".run-exit", run.exit_code === null ? "—" : String(run.exit_code));
    setText(row, ".run-message", run.message || "");
    var details = row.querySelector("details.run-details");
    if (details && run.output) {
      setText(details, ".run-runtime", String(run.runtime));
      setText(details, "pre", run.output);
      details.hidden = false;
    }
    var cancel = row.querySelector(".inline-cancel");
    if (cancel && run.status !== "pending") {
      cancel.remove();
    }
  }

  function refreshDeviceStatus() {
    if (!section.dataset.hostUrl) {
      return;
    }
    fetch(section.dataset.hostUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (host) {
        if (!host) {
          return;
        }
        var status = document.getElementById("device-status");
        if (status) {
          status.textContent = host.device_status;
          status.dataset.status = host.device_status;
        }
        var pending = document.getElementById("pending-action");
        if (pending) {
          pending.textContent = host.pending_action || "none";
        }
      })
      .catch(function () { /* the next page load shows it */ });
  }

  function poll() {
    var url = section.dataset.runsUrl + "?limit=" + encodeURIComponent(section.dataset.limit || "20");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (page) {
        var deviceChanged = false;
        (page.results || []).forEach(function (run) {
          var row = rowFor(run.execution_id);
          if (row && row.dataset.status === "pending" && run.status !== "pending") {
            update(row, run);
            deviceChanged = deviceChanged || DEVICE_KINDS[run.kind] === true;
          }
        });
        if (deviceChanged) {
          refreshDeviceStatus();
        }
      })
      .catch(function () { /* a network hiccup: try again at the next tick */ })
      .then(schedule);
  }

  function schedule() {
    if (pendingRows().length) {
      window.setTimeout(poll, INTERVAL_MS);
    }
  }

  schedule();
})();
