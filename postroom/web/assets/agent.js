// The agent bar: drawn from the embedded data, then kept current from GET /api/me.
(function () {
  "use strict";
  var el = PR.el, setText = PR.setText, setAttr = PR.setAttr;
  var URLS = document.getElementById("page-urls").dataset;
  var ME_URL = URLS.me;
  var API = URLS.codes.replace(/wrapup-codes$/, "");
  var DETAIL = URLS.detail;
  var TRANSCRIPT = URLS.transcript;
  var REPLY = URLS.reply;
  var ZERO = "00000000-0000-0000-0000-000000000000";
  var desk = JSON.parse(document.getElementById("desk-data").textContent);
  var choices = JSON.parse(document.getElementById("choices").textContent);
  var labels = {};
  choices.codes.forEach(function (c) { labels[c.code] = c.label; });
  var me = desk.agent;
  var refresh = function () {};

  function field(row, name) { return row.querySelector('[data-field="' + name + '"]'); }
  function subject(item) { return item.subject || "(no subject)"; }
  function interactionUrl(guid) { return API + "interactions/" + guid + "/"; }

  function subjectCell(item) {
    var td = el("td");
    td.appendChild(el("a", {href: TRANSCRIPT.replace(ZERO, item.guid)}, subject(item)));
    var history = el("details", {"class": "history", "data-field": "history"});
    history.appendChild(el("summary"));
    history.appendChild(el("ul"));
    td.appendChild(history);
    return td;
  }

  // The customer's other interactions (those this agent may see), under the subject.
  function updateHistory(tr, item) {
    var box = field(tr, "history");
    if (!box) return;
    var items = item.history || [];
    box.hidden = !items.length;
    setText(box.firstChild, "Customer history (" + items.length + ")");
    PR.sync(box.lastChild, items, function (h) { return h.guid; }, function (h) {
      var li = el("li");
      li.appendChild(el("a", {href: TRANSCRIPT.replace(ZERO, h.guid)}, subject(h)));
      li.appendChild(el("span", {"class": "muted"}, " " + PR.stamp(h.arrival_time).slice(0, 10) + " · " + h.status));
      return li;
    }, function () {});
  }

  function replyLink(item) {
    return el("a", {href: REPLY.replace(ZERO, item.guid), "class": "reply-link", "data-action": "reply"},
              "Reply in the browser");
  }

  function codeSelect(name, label) {
    var select = el("select", {name: name, "aria-label": label});
    select.appendChild(el("option", {value: ""}, label + "…"));
    choices.codes.forEach(function (c) { select.appendChild(el("option", {value: c.code}, c.label)); });
    return select;
  }

  function transferSelect() {
    var select = el("select", {name: "transfer", "aria-label": "Transfer to"});
    select.appendChild(el("option", {value: ""}, "Transfer to…"));
    var agents = el("optgroup", {label: "Agents"});
    choices.agents.forEach(function (a) {
      agents.appendChild(el("option", {value: "agent:" + a.address, title: a.address}, a.name));
    });
    var queues = el("optgroup", {label: "Queues"});
    choices.queues.forEach(function (q) { queues.appendChild(el("option", {value: "queue:" + q}, q)); });
    if (choices.agents.length) select.appendChild(agents);
    select.appendChild(queues);
    return select;
  }

  function button(action, text, cls) {
    return el("button", {type: "button", "data-action": action, "class": cls || ""}, text);
  }

  // --- you --------------------------------------------------------------------------

  function renderMe(agent) {
    me = agent;
    var card = document.getElementById("me");
    var ready = agent.ready ? "true" : "false";
    setAttr(card, "data-ready", ready);
    var state = document.getElementById("ready-state");
    setAttr(state, "class", agent.ready ? "state ready" : "state not-ready");
    setText(state, agent.ready ? "Ready" : "Not Ready");
    var toggle = document.getElementById("ready-toggle");
    setAttr(toggle, "data-ready", ready);
    setText(toggle, agent.ready ? "Go Not Ready" : "Go Ready");
    setText(document.getElementById("load"),
            agent.current.length + " of " + agent.capacity + " in hand");
    setText(document.getElementById("since"),
            agent.state_changed_at ? "since " + PR.clock(agent.state_changed_at) + " UTC" : "");
  }

  document.getElementById("ready-toggle").addEventListener("click", function () {
    var toggle = this;
    var path = me.ready ? "/not-ready" : "/ready";
    PR.act(toggle, function () {
      return PR.call("POST", API + "agents/" + encodeURIComponent(me.address) + path);
    }, function (agent) {
      renderMe(agent);
      return agent.ready ? "You are Ready" : "You are Not Ready";
    }).then(refresh);
  });

  // --- offered ----------------------------------------------------------------------

  function createOffered(item) {
    var tr = el("tr", {"data-guid": item.guid});
    tr.appendChild(el("td", {"class": "num", "data-field": "priority"}));
    tr.appendChild(subjectCell(item));
    tr.appendChild(el("td", {"data-field": "customer"}));
    tr.appendChild(el("td", {"data-field": "mailbox"}));
    tr.appendChild(el("td", {"class": "num", "data-field": "waiting"}));
    var td = el("td");
    var answer = button("answer", "Answer", "primary");
    answer.addEventListener("click", function () {
      PR.act(answer, function () { return PR.call("POST", interactionUrl(item.guid) + "answer"); },
             function () { return "Answered “" + subject(item) + "”"; }).then(refresh);
    });
    td.appendChild(answer);
    td.appendChild(document.createTextNode(" "));
    td.appendChild(replyLink(item));
    tr.appendChild(td);
    return tr;
  }

  function updateOffered(tr, item) {
    setText(field(tr, "priority"), item.priority);
    setText(field(tr, "customer"), PR.who(item.customer_name, item.customer));
    setText(field(tr, "mailbox"), item.mailbox);
    setText(field(tr, "waiting"), PR.waiting(item.waiting_seconds + PR.age()));
    updateHistory(tr, item);
  }

  // --- in hand ----------------------------------------------------------------------

  function createCurrent(item) {
    var tr = el("tr", {"data-guid": item.guid});
    tr.appendChild(subjectCell(item));
    tr.appendChild(el("td", {"data-field": "customer"}));
    var status = el("td");
    status.appendChild(el("span", {"class": "pill", "data-field": "status"}));
    tr.appendChild(status);
    tr.appendChild(el("td", {"class": "when", "data-field": "answered"}));
    tr.appendChild(el("td", {"class": "countdown", "data-field": "left"}));
    var td = el("td", {"class": "actions-cell"});
    var links = el("div", {"class": "actions", "data-part": "reply"});
    links.appendChild(replyLink(item));
    td.appendChild(links);

    var end = el("div", {"class": "actions", "data-part": "hangup"});
    var code = codeSelect("wrapup", "Wrap-up code");
    var hangup = button("hangup", "Hang up", "danger");
    hangup.addEventListener("click", function () {
      if (!code.value) { PR.flash("Choose a wrap-up code first", "error"); code.focus(); return; }
      PR.act(hangup, function () {
        return PR.call("POST", interactionUrl(item.guid) + "hangup", {code: code.value});
      }, function () { return "Hung up “" + subject(item) + "” (" + labels[code.value] + ")"; })
        .then(refresh);
    });
    end.appendChild(code);
    end.appendChild(hangup);

    var move = el("div", {"class": "actions", "data-part": "transfer"});
    var target = transferSelect();
    var transfer = button("transfer", "Transfer");
    transfer.addEventListener("click", function () {
      if (!target.value) { PR.flash("Choose an agent or a queue first", "error"); target.focus(); return; }
      var kind = target.value.slice(0, target.value.indexOf(":"));
      var name = target.value.slice(kind.length + 1);
      var body = {};
      body[kind] = name;
      PR.act(transfer, function () {
        return PR.call("POST", interactionUrl(item.guid) + "transfer", body);
      }, function () { return "Transferred “" + subject(item) + "” to " + name; }).then(refresh);
    });
    move.appendChild(target);
    move.appendChild(transfer);

    td.appendChild(end);
    td.appendChild(move);
    td.appendChild(el("p", {"class": "note", "data-part": "held"},
                      "Your reply waits for a supervisor's approval."));
    tr.appendChild(td);
    return tr;
  }

  function updateCurrent(tr, item) {
    setText(field(tr, "customer"), PR.who(item.customer_name, item.customer));
    var status = field(tr, "status");
    setText(status, item.status.replace("_", " "));
    setAttr(status, "class", "pill " + item.status);
    setText(field(tr, "answered"), item.answered_at ? PR.stamp(item.answered_at) : "");
    var left = field(tr, "left");
    setText(left, PR.left(item.seconds_left));
    setAttr(left, "class", item.seconds_left !== null && item.seconds_left - PR.age() < 600 ? "countdown late" : "countdown");
    updateHistory(tr, item);
    var held = item.status === "awaiting_approval";
    tr.querySelector('[data-part="reply"]').hidden = held;
    tr.querySelector('[data-part="hangup"]').hidden = held;
    tr.querySelector('[data-part="transfer"]').hidden = held;
    tr.querySelector('[data-part="held"]').hidden = !held;
  }

  // --- replied ----------------------------------------------------------------------

  function createReplied(item) {
    var tr = el("tr", {"data-guid": item.guid});
    tr.appendChild(subjectCell(item));
    tr.appendChild(el("td", {"data-field": "customer"}));
    var status = el("td");
    status.appendChild(el("span", {"class": "pill", "data-field": "status"}));
    tr.appendChild(status);
    tr.appendChild(el("td", {"class": "when", "data-field": "replied"}));
    var td = el("td");
    var box = el("div", {"class": "actions"});
    var current = el("span", {"data-field": "resolution"});
    var code = codeSelect("resolution", "Resolution");
    var set = button("resolve", "Set");
    set.addEventListener("click", function () {
      if (!code.value) { PR.flash("Choose a resolution code first", "error"); code.focus(); return; }
      PR.act(set, function () {
        return PR.call("POST", interactionUrl(item.guid) + "resolution", {code: code.value});
      }, function (ix) {
        setText(current, labels[ix.resolution_code] || ix.resolution_code);
        return "Resolution of “" + subject(item) + "”: " + labels[code.value];
      }).then(refresh);
    });
    box.appendChild(current);
    box.appendChild(code);
    box.appendChild(set);
    td.appendChild(box);
    tr.appendChild(td);
    return tr;
  }

  function updateReplied(tr, item) {
    setText(field(tr, "customer"), PR.who(item.customer_name, item.customer));
    var status = field(tr, "status");
    setText(status, item.status);
    setAttr(status, "class", "pill " + item.status);
    setText(field(tr, "replied"), PR.stamp(item.replied_at));
    setText(field(tr, "resolution"),
            item.resolution_code ? labels[item.resolution_code] || item.resolution_code : "");
  }

  function key(item) { return item.guid; }

  function render(data) {
    renderMe(data.agent);
    PR.sync(document.querySelector("#offered tbody"), data.offered, key, createOffered,
            updateOffered, PR.emptyRow(6, "Nothing offered to you."));
    PR.sync(document.querySelector("#current tbody"), data.current, key, createCurrent,
            updateCurrent, PR.emptyRow(6, "Nothing in hand."));
    PR.sync(document.querySelector("#replied tbody"), data.replied, key, createReplied,
            updateReplied, PR.emptyRow(5, "No replies in the last day."));
    setText(document.getElementById("offered-count"), data.offered.length ? "(" + data.offered.length + ")" : "");
    setText(document.getElementById("current-count"), data.current.length ? "(" + data.current.length + ")" : "");
    setText(document.getElementById("replied-count"), data.replied.length ? "(" + data.replied.length + ")" : "");
  }

  // --- keyboard: R Ready, N Not Ready, A answer the first offer, H hang up the first in hand

  function first(selector) { return document.querySelector(selector); }

  PR.shortcuts({
    r: function () { if (!me.ready) document.getElementById("ready-toggle").click(); else PR.flash("You are Ready", "ok"); },
    n: function () { if (me.ready) document.getElementById("ready-toggle").click(); else PR.flash("You are Not Ready", "ok"); },
    a: function () {
      var answer = first('#offered button[data-action="answer"]');
      if (answer) answer.click(); else PR.flash("Nothing is offered to you", "error");
    },
    h: function () {
      var row = first("#current tbody tr[data-guid]");
      if (!row) { PR.flash("Nothing in hand to hang up", "error"); return; }
      var code = row.querySelector('select[name="wrapup"]');
      if (!code.value) { code.focus(); PR.flash("Choose a wrap-up code, then press Hang up", "error"); return; }
      row.querySelector('button[data-action="hangup"]').click();
    }
  });

  render(desk);
  refresh = PR.poll(ME_URL, render);
})();
