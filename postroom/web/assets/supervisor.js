// The console: drawn from the embedded data, then kept current from GET /api/console.
(function () {
  "use strict";
  var el = PR.el, setText = PR.setText, setAttr = PR.setAttr;
  var URLS = document.getElementById("page-urls").dataset;
  var CONSOLE_URL = URLS.console;
  var API = URLS.codes.replace(/wrapup-codes$/, "");
  var DETAIL = URLS.detail;
  var open = {};  // guids whose "why" row is open
  var refresh = function () {};

  function field(node, name) { return node.querySelector('[data-field="' + name + '"]'); }
  function subject(item) { return item.subject || "(no subject)"; }
  function detailLink(guid, text) {
    return el("a", {href: DETAIL.replace("00000000-0000-0000-0000-000000000000", guid)}, text);
  }
  function button(action, text, cls) {
    return el("button", {type: "button", "data-action": action, "class": cls || ""}, text);
  }
  function ago(now, iso) {
    return PR.waiting(Math.max(0, Math.round((new Date(now) - new Date(iso)) / 1000) + PR.age()));
  }

  // --- approvals --------------------------------------------------------------------

  var now = null;

  function decide(card, item, button, path, body, message) {
    PR.act(button, function () {
      return PR.call("POST", API + "approvals/" + item.id + "/" + path, body);
    }, function () { return message; }).then(function (result) {
      if (result) card.remove();
      refresh();
    });
  }

  function createApproval(item) {
    var card = el("article", {"class": "card approval", "data-approval": String(item.id),
                              "aria-label": "Approval " + item.id});
    var head = el("header");
    var h3 = el("h3");
    h3.appendChild(detailLink(item.interaction, subject(item)));
    head.appendChild(h3);
    head.appendChild(el("span", {"class": "pill pending"}, "pending"));
    head.appendChild(el("span", {"class": "muted", "data-field": "age"}));
    card.appendChild(head);

    var dl = el("dl");
    [["Agent", PR.who(item.agent_name, item.agent || "")],
     ["Customer", PR.who(item.customer_name, item.customer)],
     ["Held because", item.reason_held || "—"],
     ["Reply subject", item.reply_subject || "—"]].forEach(function (pair) {
      dl.appendChild(el("dt", {}, pair[0]));
      dl.appendChild(el("dd", {}, pair[1]));
    });
    card.appendChild(dl);
    card.appendChild(el("pre", {"class": "reply", "data-field": "text"}, item.text || "(empty reply)"));

    var actions = el("div", {"class": "actions"});
    var approve = button("approve", "Approve", "primary");
    approve.addEventListener("click", function () {
      decide(card, item, approve, "approve", {}, "Approved “" + subject(item) + "”");
    });
    var reason = el("input", {type: "text", name: "reason", placeholder: "Reason for the agent",
                              "aria-label": "Reason for rejecting"});
    var reject = button("reject", "Reject", "danger");
    reject.addEventListener("click", function () {
      if (!reason.value.trim()) { PR.flash("Give the agent a reason first", "error"); reason.focus(); return; }
      decide(card, item, reject, "reject", {reason: reason.value}, "Rejected “" + subject(item) + "”");
    });
    var edit = button("edit", "Edit then approve");
    actions.appendChild(approve);
    actions.appendChild(edit);
    actions.appendChild(reason);
    actions.appendChild(reject);
    card.appendChild(actions);

    var form = el("div", {"class": "edit", "data-part": "edit"});
    form.hidden = true;
    var text = el("textarea", {name: "text", "aria-label": "Reply text to approve"});
    text.value = item.text;
    var save = button("approve-edited", "Approve edited reply", "primary");
    save.addEventListener("click", function () {
      if (!text.value.trim()) { PR.flash("The edited reply is empty", "error"); text.focus(); return; }
      decide(card, item, save, "approve", {text: text.value}, "Approved “" + subject(item) + "” with your edits");
    });
    var cancel = button("cancel-edit", "Cancel");
    cancel.addEventListener("click", function () { form.hidden = true; edit.hidden = false; });
    edit.addEventListener("click", function () { form.hidden = false; edit.hidden = true; text.focus(); });
    form.appendChild(text);
    var row = el("div", {"class": "actions"});
    row.appendChild(save);
    row.appendChild(cancel);
    form.appendChild(row);
    card.appendChild(form);
    return card;
  }

  function updateApproval(card, item) {
    setText(field(card, "age"), "waiting " + ago(now, item.requested_at));
  }

  // --- queues -----------------------------------------------------------------------

  function ruleLine(entry) {
    if (entry && typeof entry === "object" && !Array.isArray(entry)) {
      var name = entry.name || entry.rule || "";
      var rest = Object.keys(entry).filter(function (k) { return k !== "name" && k !== "rule"; })
        .map(function (k) { return k + ": " + (typeof entry[k] === "object" ? JSON.stringify(entry[k]) : entry[k]); })
        .join(", ");
      return name && rest ? name + " (" + rest + ")" : String(name || rest);
    }
    if (Array.isArray(entry)) return entry.join(" — ");
    return String(entry);
  }

  function whyContent(item) {
    var grid = el("div", {"class": "why-grid"});
    var prio = el("div");
    prio.appendChild(el("h4", {}, "Priority " + item.priority + " because"));
    var list = el("ul");
    (item.priority_reasons || []).forEach(function (r) {
      var li = el("li");
      if (Array.isArray(r) && r.length === 2) {
        li.appendChild(document.createTextNode(String(r[0])));
        var v = typeof r[1] === "number" ? (r[1] >= 0 ? "+" : "") + r[1] : String(r[1]);
        li.appendChild(el("span", {"class": "value"}, v));
      } else { li.textContent = String(r); }
      list.appendChild(li);
    });
    if (!list.children.length) list.appendChild(el("li", {"class": "muted"}, "No reasons recorded."));
    prio.appendChild(list);
    grid.appendChild(prio);

    var rules = el("div");
    rules.appendChild(el("h4", {}, "Rules"));
    var trace = item.rules || {};
    var hits = Array.isArray(trace) ? trace : (trace.hits || []);
    var misses = Array.isArray(trace) ? [] : (trace.misses || []);
    var rlist = el("ul");
    hits.forEach(function (h) { rlist.appendChild(el("li", {"class": "hit"}, ruleLine(h))); });
    misses.forEach(function (m) { rlist.appendChild(el("li", {"class": "miss"}, ruleLine(m))); });
    if (!Array.isArray(trace)) {
      Object.keys(trace).forEach(function (k) {
        if (k === "hits" || k === "misses") return;
        var v = trace[k];
        rlist.appendChild(el("li", {}, k + ": " + (typeof v === "string" ? v : JSON.stringify(v))));
      });
    }
    if (!rlist.children.length) rlist.appendChild(el("li", {"class": "muted"}, "No rule looked at it."));
    rules.appendChild(rlist);
    grid.appendChild(rules);
    return grid;
  }

  function createQueued(item) {
    var body = el("tbody");
    var tr = el("tr", {"data-guid": item.guid});
    tr.appendChild(el("td", {"class": "num", "data-field": "priority"}));
    var s = el("td");
    s.appendChild(detailLink(item.guid, subject(item)));
    tr.appendChild(s);
    tr.appendChild(el("td", {"data-field": "customer"}));
    tr.appendChild(el("td", {"data-field": "mailbox"}));
    tr.appendChild(el("td", {"data-field": "target"}));
    tr.appendChild(el("td", {"class": "num", "data-field": "waiting"}));
    var td = el("td");
    var why = button("why", "Why?");
    why.setAttribute("aria-expanded", "false");
    why.addEventListener("click", function () {
      open[item.guid] = !open[item.guid];
      update(body, body.__item);
    });
    td.appendChild(why);
    tr.appendChild(td);
    body.appendChild(tr);
    var whyRow = el("tr", {"class": "why", "data-why": item.guid});
    whyRow.appendChild(el("td", {colspan: "7"}));
    body.appendChild(whyRow);
    return body;
  }

  function update(body, item) {
    body.__item = item;
    var tr = body.firstChild;
    setText(field(tr, "priority"), item.priority);
    setText(field(tr, "customer"), PR.who(item.customer_name, item.customer));
    setText(field(tr, "mailbox"), item.mailbox);
    setText(field(tr, "target"), item.target_agent || "");
    setText(field(tr, "waiting"), PR.waiting(item.waiting_seconds + PR.age()));
    var isOpen = !!open[item.guid];
    setAttr(tr.querySelector('[data-action="why"]'), "aria-expanded", isOpen ? "true" : "false");
    var whyRow = body.lastChild;
    whyRow.hidden = !isOpen;
    if (isOpen) {
      var fresh = whyContent(item);
      var cell = whyRow.firstChild;
      if (!cell.firstChild || cell.firstChild.textContent !== fresh.textContent) cell.replaceChildren(fresh);
    }
  }

  function createQueue(group) {
    var section = el("section", {"class": "queue", "data-queue": group.queue});
    var h3 = el("h3");
    h3.appendChild(document.createTextNode(group.queue + " "));
    h3.appendChild(el("span", {"class": "n", "data-field": "count"}));
    section.appendChild(h3);
    var table = el("table");
    var head = el("thead");
    var row = el("tr");
    [["Priority", "num"], ["Subject"], ["Customer"], ["Mailbox"], ["For agent"], ["Waiting", "num"],
     ["Why"]].forEach(function (c) { row.appendChild(el("th", {scope: "col", "class": c[1] || ""}, c[0])); });
    head.appendChild(row);
    table.appendChild(head);
    section.appendChild(table);
    return section;
  }

  function updateQueue(section, group) {
    var total = group.total === undefined ? group.items.length : group.total;
    setText(field(section, "count"), total > group.items.length ?
            "(" + total + ", the first " + group.items.length + " shown)" : "(" + total + ")");
    PR.sync(section.querySelector("table"), group.items, function (i) { return i.guid; },
            createQueued, update);
  }

  // --- agents -----------------------------------------------------------------------

  function createAgent(agent) {
    var tr = el("tr", {"data-agent": agent.address});
    var who = el("td");
    who.appendChild(el("div", {"class": "agent-name", "data-field": "name"}));
    who.appendChild(el("div", {"class": "agent-address"}, agent.address));
    tr.appendChild(who);
    var state = el("td");
    state.appendChild(el("span", {"data-field": "state"}));
    tr.appendChild(state);
    tr.appendChild(el("td", {"class": "num", "data-field": "load"}));
    tr.appendChild(el("td", {"data-field": "since"}));
    var cur = el("td");
    cur.appendChild(el("ul", {"class": "current-list", "data-field": "current"}));
    tr.appendChild(cur);
    return tr;
  }

  function updateAgent(tr, agent) {
    setAttr(tr, "data-ready", agent.ready ? "true" : "false");
    setText(field(tr, "name"), agent.name + (agent.is_supervisor ? " (supervisor)" : ""));
    var state = field(tr, "state");
    setAttr(state, "class", agent.ready ? "state ready" : "state not-ready");
    setText(state, agent.ready ? "Ready" : "Not Ready");
    setText(field(tr, "load"), agent.load + " / " + agent.capacity);
    setText(field(tr, "since"), agent.state_changed_at ? PR.stamp(agent.state_changed_at) : "");
    PR.sync(field(tr, "current"), agent.current, function (ix) { return ix.guid; }, function (ix) {
      var li = el("li", {"data-guid": ix.guid});
      li.appendChild(detailLink(ix.guid, subject(ix)));
      li.appendChild(el("span", {"class": "pill"}));
      li.appendChild(el("span", {"class": "countdown", "data-field": "left"}));
      return li;
    }, function (li, ix) {
      var pill = li.querySelector(".pill");
      setText(pill, ix.status.replace("_", " "));
      setAttr(pill, "class", "pill " + ix.status);
      var left = li.querySelector('[data-field="left"]');
      setText(left, ix.seconds_left === null || ix.seconds_left === undefined ? "" : " " + PR.left(ix.seconds_left));
      setAttr(left, "class", ix.seconds_left !== null && ix.seconds_left !== undefined && ix.seconds_left - PR.age() < 600 ? "countdown late" : "countdown");
    }, function () { return el("li", {"class": "muted"}, "—"); });
  }

  // --- decided ----------------------------------------------------------------------

  function createDecided(item) {
    var tr = el("tr", {"data-decided": String(item.id)});
    var s = el("td");
    s.appendChild(detailLink(item.interaction, subject(item)));
    tr.appendChild(s);
    tr.appendChild(el("td", {}, item.agent_name || item.agent || ""));
    var d = el("td");
    d.appendChild(el("span", {"data-field": "decision"}));
    tr.appendChild(d);
    tr.appendChild(el("td", {"data-field": "by"}));
    tr.appendChild(el("td", {"data-field": "at"}));
    tr.appendChild(el("td", {"data-field": "engine"}));
    return tr;
  }

  function updateDecided(tr, item) {
    var d = field(tr, "decision");
    var text = item.state === "approved" && item.edited_text ? "approved, edited" : item.state;
    if (item.state === "rejected" && item.rejection_reason) text += ": " + item.rejection_reason;
    setText(d, text);
    setAttr(d, "class", "pill " + item.state);
    setText(field(tr, "by"), item.decided_by + (item.decided_via ? " (" + item.decided_via + ")" : ""));
    setText(field(tr, "at"), PR.stamp(item.decided_at));
    setText(field(tr, "engine"), item.applied_at ? "done " + PR.clock(item.applied_at) : "waiting");
  }

  function render(data) {
    now = data.now;
    ["queued", "with_agents", "replied_today"].forEach(function (k) {
      setText(document.querySelector('[data-count="' + k + '"]'), data.summary[k]);
    });
    setText(document.querySelector('[data-count="approvals"]'), data.approvals.length);
    PR.sync(document.getElementById("approvals"), data.approvals, function (a) { return a.id; },
            createApproval, updateApproval,
            function () { return el("p", {"class": "muted card"}, "No replies are waiting for approval."); });
    PR.sync(document.getElementById("queues"), data.queues, function (g) { return g.queue; },
            createQueue, updateQueue,
            function () { return el("p", {"class": "muted card"}, "No interactions are queued."); });
    PR.sync(document.querySelector("#agents tbody"), data.agents, function (a) { return a.address; },
            createAgent, updateAgent, PR.emptyRow(5, "No agents configured."));
    PR.sync(document.querySelector("#decided tbody"), data.decided, function (a) { return a.id; },
            createDecided, updateDecided, PR.emptyRow(6, "Nothing decided yet."));
  }

  render(JSON.parse(document.getElementById("console-data").textContent));
  refresh = PR.poll(CONSOLE_URL, render);
})();
