// Live refresh: fetch /api/status every second (session cookie, if any) and redraw.
// Text goes in with textContent only, never as HTML.
(function () {
  "use strict";
  var URL = document.getElementById("page-urls").dataset.status;
  var PERIOD_MS = 1000;
  var CSRF = document.querySelector('meta[name="csrf-token"]').content;
  var conn = document.getElementById("connection");
  var lost = false;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var key in attrs || {}) { node.setAttribute(key, attrs[key]); }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function two(n) { return (n < 10 ? "0" : "") + n; }

  function waiting(s) {
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + two(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + two(Math.floor(s % 3600 / 60)) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
  }

  function stamp(iso) {
    var d = new Date(iso);
    return d.getUTCFullYear() + "-" + two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate()) +
      " " + two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + ":" + two(d.getUTCSeconds());
  }

  function renderQueue(queue) {
    var body = document.createElement("tbody");
    if (!queue.length) {
      var tr = el("tr", {"class": "empty"});
      tr.appendChild(el("td", {colspan: "6"}, "The queue is empty."));
      body.appendChild(tr);
    }
    queue.forEach(function (item) {
      var tr = el("tr", {"data-guid": item.guid});
      tr.appendChild(el("td", {"class": "num"}, item.priority));
      tr.appendChild(el("td", {}, item.subject || "(no subject)"));
      tr.appendChild(el("td", {}, item.customer_name ?
        item.customer_name + " <" + item.customer + ">" : item.customer));
      tr.appendChild(el("td", {}, item.mailbox));
      var td = el("td");
      td.appendChild(el("time", {datetime: item.arrival_time}, stamp(item.arrival_time)));
      tr.appendChild(td);
      tr.appendChild(el("td", {"class": "num"}, waiting(item.waiting_seconds)));
      body.appendChild(tr);
    });
    var table = document.getElementById("queue");
    table.replaceChild(body, table.tBodies[0]);
  }

  function renderAgent(agent) {
    var li = el("li", {"class": "agent", "data-agent": agent.address,
                       "data-ready": agent.ready ? "true" : "false"});
    var h3 = el("h3");
    h3.appendChild(el("span", {"class": "name"}, agent.name));
    h3.appendChild(el("span", {"class": agent.ready ? "state ready" : "state not-ready"},
                      agent.ready ? "Ready" : "Not Ready"));
    li.appendChild(h3);
    li.appendChild(el("div", {"class": "address"}, agent.address));
    var tags = el("ul", {"class": "tags", "aria-label": "Skills and flags"});
    agent.skills.forEach(function (s) { tags.appendChild(el("li", {}, s)); });
    if (agent.auto_answer) tags.appendChild(el("li", {"class": "flag"}, "auto-answer"));
    if (agent.is_supervisor) tags.appendChild(el("li", {"class": "flag"}, "supervisor"));
    li.appendChild(tags);
    if (agent.current.length) {
      var cur = el("ul", {"class": "current", "aria-label": "Current interactions"});
      agent.current.forEach(function (ix) {
        var row = el("li", {"data-guid": ix.guid});
        row.appendChild(el("span", {}, ix.subject || "(no subject)"));
        row.appendChild(el("span", {"class": "status"}, ix.status));
        cur.appendChild(row);
      });
      li.appendChild(cur);
    } else {
      li.appendChild(el("p", {"class": "idle muted"}, "No interactions."));
    }
    return li;
  }

  function renderAgents(agents) {
    var list = document.getElementById("agents");
    var items = agents.map(renderAgent);
    if (!items.length) items = [el("li", {"class": "muted"}, "No agents configured.")];
    list.replaceChildren.apply(list, items);
  }

  function render(status) {
    ["queued", "with_agents", "replied_today"].forEach(function (key) {
      var dd = document.querySelector('[data-count="' + key + '"]');
      if (dd.textContent !== String(status.summary[key])) dd.textContent = status.summary[key];
    });
    renderQueue(status.queue);
    renderAgents(status.agents);
    var updated = document.getElementById("updated");
    if (lost || !updated) {
      // Only rewrite the live region when the connection state changes.
      conn.className = "";
      conn.textContent = "Updated ";
      updated = conn.appendChild(el("time", {id: "updated"}));
      lost = false;
    }
    updated.setAttribute("datetime", status.now);
    updated.textContent = stamp(status.now).slice(11) + " UTC";
  }

  function showLost(why) {
    if (lost) return;
    lost = true;
    conn.className = "lost";
    conn.textContent = "Not updating (" + why + ") — retrying…";
  }

  function tick() {
    // With a session, the API checks CSRF on unsafe methods; send the token always.
    fetch(URL, {credentials: "same-origin",
                headers: {"Accept": "application/json", "X-CSRFToken": CSRF}})
      .then(function (r) {
        if (!r.ok) throw new Error(r.status === 401 ? "not logged in" : "HTTP " + r.status);
        return r.json();
      })
      .then(render)
      .catch(function (err) { showLost(err.message || "offline"); })
      .then(function () { window.setTimeout(tick, PERIOD_MS); });
  }

  tick();
})();
