/*
 * The campaign page: follow /ws/campaigns/<id>/ and keep the page current.
 *
 * The server sends {"type": "totals"|"result"|"status"|"error", "data": ...}. On every
 * (re)connection it first replays the answers it stored, then streams new ones, so this script
 * keeps the ids of hosts already shown and skips repeats: reconnecting never doubles a row.
 * Everything from the server is written with textContent, never as HTML.
 */
(function () {
  "use strict";

  var MAX_ROWS_SHOWN = 5000; // beyond this the browser slows down; the CSV export has them all
  var ACTIVE = { waiting: true, running: true };
  var STATUS_LABELS = {
    waiting: "Waiting", running: "Running", finished: "Finished", stopped: "Stopped", expired: "Expired"
  };
  // Close codes the consumer uses for refusals: reconnecting would not help.
  var FINAL_CLOSE_CODES = { 4001: true, 4003: true, 4004: true };

  var page = document.getElementById("content-main");
  if (!page || !page.dataset.websocketPath) {
    return;
  }

  var resultsTable = document.getElementById("results");
  var headRow = resultsTable.tHead.rows[0];
  var resultsBody = resultsTable.tBodies[0];
  var errorsBody = document.getElementById("errors").tBodies[0];
  var rowCount = document.getElementById("row-count");
  var rowWord = document.getElementById("row-word");
  var resultsNote = document.getElementById("results-note");
  var filterInput = document.getElementById("results-filter");
  var connection = document.getElementById("connection");

  var answered = new Set();
  var columns = [];
  var columnIndex = new Map();
  var rowsReceived = 0;
  var rowsShown = 0;
  var campaignStatus = page.dataset.status;
  var socket = null;
  var retryDelay = 1000;
  var closedOnPurpose = false;

  function setAll(selector, value) {
    document.querySelectorAll(selector).forEach(function (el) {
      el.textContent = value;
    });
  }

  function setConnection(text, state) {
    connection.textContent = text;
    connection.dataset.state = state || "";
  }

  function hostCell(result) {
    var cell = document.createElement("td");
    var name = result.hostname || "host " + result.host_id;
    if (page.dataset.hostUrl) {
      var link = document.createElement("a");
      link.href = page.dataset.hostUrl.replace("/0/", "/" + encodeURIComponent(result.host_id) + "/");
      link.textContent = name;
      cell.appendChild(link);
    } else {
      cell.textContent = name;
    }
    return cell;
  }

  function addColumn(name) {
    columnIndex.set(name, columns.length);
    columns.push(name);
    var th = document.createElement("th");
    th.textContent = name;
    th.scope = "col";
    th.tabIndex = 0;
    th.dataset.column = name;
    th.setAttribute("aria-sort", "none");
    headRow.appendChild(th);
    // Pad the rows already shown, so cells stay under their headers.
    Array.prototype.forEach.call(resultsBody.rows, function (tr) {
      tr.appendChild(document.createElement("td"));
    });
    addColumnChoice(name, columns.length); // cell index: the host cell is 0
  }

  // --- column choice: a checkbox per column hides or shows it ----------------------------------
  var columnChoices = document.getElementById("column-choices");
  var hiddenColumns = new Set();

  function addColumnChoice(name, cellIndex) {
    if (!columnChoices) {
      return;
    }
    var hint = columnChoices.querySelector("p.help");
    if (hint) {
      hint.remove();
    }
    var label = document.createElement("label");
    var box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.dataset.column = name;
    box.addEventListener("change", function () {
      if (box.checked) {
        hiddenColumns.delete(cellIndex);
      } else {
        hiddenColumns.add(cellIndex);
      }
      applyHiddenColumns();
    });
    label.appendChild(box);
    label.appendChild(document.createTextNode(" " + name));
    columnChoices.appendChild(label);
  }

  function applyHiddenColumns(rows) {
    var targets = rows || Array.prototype.concat.call([headRow], Array.prototype.slice.call(resultsBody.rows));
    targets.forEach(function (tr) {
      Array.prototype.forEach.call(tr.cells, function (cell, index) {
        cell.hidden = hiddenColumns.has(index);
      });
    });
  }

  // --- sorting: click (or Enter on) a header; numbers sort as numbers --------------------------
  var sortState = { index: -1, descending: false };
  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function sortRows() {
    if (sortState.index < 0) {
      return;
    }
    var index = sortState.index;
    var sign = sortState.descending ? -1 : 1;
    var rows = Array.prototype.slice.call(resultsBody.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index] ? a.cells[index].textContent : "";
      var y = b.cells[index] ? b.cells[index].textContent : "";
      return sign * collator.compare(x, y);
    });
    var fragment = document.createDocumentFragment();
    rows.forEach(function (tr) {
      fragment.appendChild(tr);
    });
    resultsBody.appendChild(fragment);
  }

  function onHeaderActivate(th) {
    var index = Array.prototype.indexOf.call(headRow.cells, th);
    if (index < 0) {
      return;
    }
    sortState.descending = sortState.index === index ? !sortState.descending : false;
    sortState.index = index;
    Array.prototype.forEach.call(headRow.cells, function (cell) {
      cell.setAttribute("aria-sort", "none");
    });
    th.setAttribute("aria-sort", sortState.descending ? "descending" : "ascending");
    sortRows();
  }

  headRow.addEventListener("click", function (event) {
    var th = event.target.closest("th");
    if (th) {
      onHeaderActivate(th);
    }
  });
  headRow.addEventListener("keydown", function (event) {
    var th = event.target.closest("th");
    if (th && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      onHeaderActivate(th);
    }
  });

  function cellText(value) {
    if (value === null || value === undefined) {
      return "";
    }
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  function matchesFilter(tr) {
    var needle = filterInput.value.trim().toLowerCase();
    return !needle || tr.textContent.toLowerCase().indexOf(needle) !== -1;
  }

  function addRows(result) {
    var rows = Array.isArray(result.rows) ? result.rows : [];
    rowsReceived += rows.length;
    rows.forEach(function (row) {
      if (rowsShown >= MAX_ROWS_SHOWN || row === null || typeof row !== "object") {
        return;
      }
      Object.keys(row).forEach(function (key) {
        if (!columnIndex.has(key)) {
          addColumn(key);
        }
      });
      var tr = document.createElement("tr");
      tr.dataset.hostId = result.host_id;
      tr.appendChild(hostCell(result));
      columns.forEach(function (name) {
        var td = document.createElement("td");
        td.textContent = Object.prototype.hasOwnProperty.call(row, name) ? cellText(row[name]) : "";
        tr.appendChild(td);
      });
      tr.hidden = !matchesFilter(tr);
      if (hiddenColumns.size) {
        applyHiddenColumns([tr]);
      }
      resultsBody.appendChild(tr);
      rowsShown += 1;
    });
    if (sortState.index >= 0 && rows.length) {
      sortRows();
    }
    rowCount.textContent = rowsReceived;
    rowWord.textContent = rowsReceived === 1 ? "row" : "rows";
    if (rowsShown < rowsReceived) {
      resultsNote.hidden = false;
      resultsNote.textContent = "Showing the first " + rowsShown + " rows; export CSV for all of them.";
    }
    if (typeof result.row_count === "number" && result.row_count > rows.length) {
      document.getElementById("truncated").hidden = false;
    }
  }

  function addError(result) {
    var tr = document.createElement("tr");
    tr.dataset.hostId = result.host_id;
    tr.appendChild(hostCell(result));
    var td = document.createElement("td");
    td.textContent = result.error || "(no message)";
    tr.appendChild(td);
    errorsBody.appendChild(tr);
    document.getElementById("errors-section").hidden = false;
  }

  function markAnswered(hostId) {
    document.querySelectorAll("#not-answered tr[data-host-id]").forEach(function (tr) {
      if (tr.dataset.hostId === String(hostId)) {
        tr.remove();
      }
    });
  }

  function updateMore(listId, outstanding) {
    var list = document.getElementById(listId);
    var note = document.querySelector('[data-more-for="' + listId + '"]');
    if (!list || !note) {
      return;
    }
    var more = Math.max(0, outstanding - list.tBodies[0].rows.length);
    note.querySelector(".more-count").textContent = more;
    note.hidden = more === 0;
  }

  function onResult(result) {
    if (!result || answered.has(result.host_id)) {
      return; // replayed after a reconnection
    }
    answered.add(result.host_id);
    markAnswered(result.host_id);
    if (result.state === "failed") {
      addError(result);
    } else {
      addRows(result);
    }
  }

  function onTotals(totals) {
    ["targeted", "online", "offline", "missing"].forEach(function (key) {
      if (key in totals) {
        setAll('[data-total="' + key + '"]', totals[key]);
      }
    });
  }

  function onStatus(status) {
    ["actual_results", "expected_results", "rows", "no_rows", "failed", "pending", "offline"].forEach(
      function (key) {
        if (key in status) {
          setAll('[data-count="' + key + '"]', status[key]);
        }
      }
    );
    var progress = document.getElementById("progress");
    progress.max = Math.max(1, status.expected_results || 0);
    progress.value = Math.min(progress.max, status.actual_results || 0);
    updateMore("pending-hosts", status.pending || 0);
    updateMore("offline-hosts", status.offline || 0);
    if (status.campaign_status) {
      setCampaignStatus(status.campaign_status);
    }
  }

  function setCampaignStatus(value) {
    campaignStatus = value;
    page.dataset.status = value;
    var badge = document.getElementById("campaign-status");
    badge.textContent = STATUS_LABELS[value] || value;
    badge.className = "campaign-status status-" + value;
    if (!ACTIVE[value]) {
      var stop = document.getElementById("stop-item");
      if (stop) {
        stop.remove();
      }
    }
  }

  function onError(message) {
    var note = document.getElementById("ws-error");
    if (!note) {
      note = document.createElement("p");
      note.id = "ws-error";
      note.className = "errornote";
      page.insertBefore(note, page.firstChild);
    }
    note.textContent = String(message);
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + page.dataset.websocketPath);
    setConnection("connecting…", "connecting");
    socket.onopen = function () {
      retryDelay = 1000;
      setConnection(ACTIVE[campaignStatus] ? "live" : "", "open");
    };
    socket.onmessage = function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (message.type === "result") {
        onResult(message.data);
      } else if (message.type === "totals") {
        onTotals(message.data);
      } else if (message.type === "status") {
        onStatus(message.data);
        if (!ACTIVE[campaignStatus]) {
          setConnection("", "open");
        }
      } else if (message.type === "error") {
        onError(message.data);
      }
    };
    socket.onclose = function (event) {
      if (closedOnPurpose || FINAL_CLOSE_CODES[event.code]) {
        setConnection(FINAL_CLOSE_CODES[event.code] ? "not watching" : "", "closed");
        return;
      }
      setConnection("disconnected, reconnecting…", "retrying");
      window.setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    };
  }

  filterInput.addEventListener("input", function () {
    Array.prototype.forEach.call(resultsBody.rows, function (tr) {
      tr.hidden = !matchesFilter(tr);
    });
  });

  window.addEventListener("beforeunload", function () {
    closedOnPurpose = true;
    if (socket) {
      socket.close();
    }
  });

  var stopForm = document.getElementById("stop-form");
  if (stopForm) {
    stopForm.addEventListener("submit", function () {
      stopForm.querySelector("button").disabled = true;
    });
  }

  connect();
})();
