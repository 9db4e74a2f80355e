/*
 * The live-query page: show how many targets are online while they are being picked, so an
 * admin knows before pressing Run who can answer, and run with Ctrl/Cmd+Enter.
 *
 * The count comes from the form's count URL (POST, the same fields as the form): a pasted
 * list of hosts can be longer than a URL. Requests are debounced, and an answer that arrives
 * after a newer request was sent is dropped.
 */
(function () {
  "use strict";

  var DEBOUNCE_MS = 400;
  var form = document.getElementById("live-query-form");
  if (!form) {
    return;
  }
  var output = document.getElementById("target-count");
  var sql = form.elements.namedItem("sql");
  var timer = null;
  var sequence = 0;

  function show(text, state) {
    output.textContent = text;
    output.dataset.state = state;
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function describe(counts) {
    var text = plural(counts.targeted, "host") + " targeted: " + counts.online + " online, " +
      counts.offline + " offline";
    if (counts.missing) {
      text += " (" + counts.missing + " missing)";
    }
    text += ".";
    if (counts.targeted && !counts.online) {
      text += " None is online now: they answer when they next check in.";
    }
    return text;
  }

  function anythingChosen(data) {
    return Boolean(
      data.get("all_hosts") ||
      data.getAll("teams").length ||
      data.getAll("labels").length ||
      data.getAll("selected_hosts").length ||
      (data.get("hosts") || "").trim()
    );
  }

  function refresh() {
    var data = new FormData(form);
    data.delete("sql");
    if (!anythingChosen(data)) {
      sequence += 1;
      show("No targets chosen yet.", "empty");
      return;
    }
    var mine = ++sequence;
    show("Counting targets…", "busy");
    fetch(form.dataset.countUrl, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "X-Requested-With": "XMLHttpRequest", Accept: "application/json" }
    })
      .then(function (response) {
        return response.json().then(function (body) {
          return { ok: response.ok, body: body };
        });
      })
      .then(function (answer) {
        if (mine !== sequence) {
          return;
        }
        if (!answer.ok || answer.body.error) {
          show(answer.body.error || "Could not count the targets.", "error");
        } else {
          show(describe(answer.body), answer.body.online ? "ok" : "warn");
        }
      })
      .catch(function () {
        if (mine === sequence) {
          show("Could not count the targets (are you still logged in?).", "error");
        }
      });
  }

  function schedule(event) {
    if (event.target === sql) {
      return;
    }
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, DEBOUNCE_MS);
  }

  form.addEventListener("input", schedule);
  form.addEventListener("change", schedule);

  sql.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      if (typeof form.requestSubmit === "function") {
        form.requestSubmit();
      } else {
        form.submit();
      }
    }
  });

  form.addEventListener("submit", function () {
    var button = document.getElementById("run-button");
    window.setTimeout(function () {
      button.disabled = true; // after the submit is on its way, so the button's value is sent
    }, 0);
  });

  refresh();
})();
